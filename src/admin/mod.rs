//! Looking after vhrun itself rather than running robots: what the machine
//! offers (`doctor`) and reclaiming vhrun's disk space (`gc`).

pub mod doctor;
pub mod gc;
