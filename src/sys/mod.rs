//! Raw system interfaces behind small safe APIs. Every `unsafe` block and
//! every raw syscall of the crate lives under this module.

pub mod mountinfo;
pub mod nsprobe;
pub mod watchdog;
