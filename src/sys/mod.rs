//! Every `unsafe` block and raw syscall of the crate, each behind a small
//! safe function.

pub mod nsprobe;
