//! vhrun: run rcc robots over a virtual holotree.
//!
//! The data flows robot.yaml -> `robot` -> `blueprint` -> `hololib`
//! catalog -> `tree` -> `fuse` -> `sandbox` -> `run`; `commands` holds one
//! function per CLI subcommand, `cli` their arguments.

pub mod cli;
pub mod commands;
pub mod digest;
pub mod error;
pub mod gomode;
pub mod hololib;
pub mod logging;
pub mod relocate;
pub mod sandbox;
pub mod sys;

pub use error::{Error, Result};
