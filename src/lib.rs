//! vhrun: run rcc robots over a virtual holotree.
//!
//! The modules follow the data of a run:
//!
//! ```text
//! robot.yaml -> robot -> blueprint -> hololib catalog -> tree
//!            -> lower (image | server | fuse | copy) -> sandbox -> the task
//! ```
//!
//! - [`robot`] reads robot.yaml, [`blueprint`] turns its conda.yaml into
//!   rcc's blueprint hash, [`resolve`] finds the catalog of that blueprint
//!   in a [`hololib`] (rcc's store; [`holozip`] imports a robot's
//!   `hololib.zip` first) and where rcc would restore it;
//! - [`tree`] decodes the catalog once into the inode arena every way of
//!   serving it reads ([`relocate`], [`gomode`], [`digest`]: rcc's formats);
//! - [`lower`] provides that tree read-only: a kernel EROFS image, the
//!   catalog's warm FUSE server, or a FUSE mount of the run's own; or, on a
//!   machine that refuses those ([`error::Refusal`]), a restored copy of the
//!   space as rcc makes it;
//! - [`sandbox`] runs the commands in private namespaces over an overlay on
//!   that tree; [`environ`] (with [`settings`]) builds their variables as
//!   rcc does; [`run`] ties the steps together and [`runstats`] reports
//!   what a run cost.
//!
//! Beside the flow: [`builder`] makes a missing environment (or lets the
//! real [`rcc`] make it; [`remote`] pulls it from an rccremote first when
//! `RCC_REMOTE_ORIGIN` is set), [`shim`] puts vhrun behind an `rcc` command,
//! [`admin`] holds `doctor` and `gc`, [`home`] owns `$VHRUN_HOME`'s layout,
//! [`paths`] the Go path helpers, [`error`] the error type, [`logging`]
//! the log. [`commands`] has one function per subcommand ([`cli`] their
//! clap arguments, and the only place `VHRUN_*` switches are read);
//! [`sys`] is the only module with `unsafe` code, behind safe functions
//! whose invariants `sys` itself establishes (`deny(unsafe_code)` below).

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
pub mod home;
pub mod logging;
pub mod lower;
pub mod paths;
pub mod rcc;
pub mod relocate;
pub mod remote;
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
