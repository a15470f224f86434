//! vhrun: run rcc robots over a virtual holotree.
//!
//! The data flows robot.yaml -> `robot` -> `blueprint` -> `hololib`
//! catalog -> `tree` -> `fuse` -> `sandbox` -> `run`; `commands` holds one
//! function per CLI subcommand, `cli` their arguments.
//!
//! `unsafe` code lives in `sys` only, behind safe functions whose
//! invariants `sys` itself establishes.

#![deny(unsafe_code)]

pub mod admin;
pub mod blueprint;
pub mod builder;
pub mod cli;
pub mod commands;
pub mod digest;
pub mod environ;
pub mod error;
pub mod gomode;
pub mod hololib;
pub mod holozip;
pub mod logging;
pub mod lower;
pub mod paths;
pub mod rcc;
pub mod relocate;
pub mod resolve;
pub mod robot;
pub mod run;
pub mod runstats;
pub mod sandbox;
pub mod settings;
pub mod shim;
#[allow(unsafe_code)]
pub mod sys;
pub mod tree;

pub use error::{Error, Result};
