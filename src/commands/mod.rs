//! One function per subcommand: each takes its parsed arguments, does the
//! work through the library, prints what the user sees, and returns the
//! process exit code.

use crate::cli::{Cli, Command};
use crate::error::Result;

pub mod build;
pub mod catalogs;
pub mod check;
pub mod doctor;
pub mod exec;
pub mod export;
pub mod gc;
pub mod hash;
pub mod image;
pub mod import;
pub mod lift;
pub mod mount;
pub mod prepare;
pub mod pull;
pub mod restore;
pub mod run;
pub mod serve;
pub mod servers;
pub mod shim;
pub mod switches;
pub mod vars;

pub fn dispatch(cli: Cli) -> Result<i32> {
    match cli.command {
        None => run::run(&cli.run),
        Some(Command::Run(a)) => run::run(&a),
        Some(Command::Exec(a)) => exec::run(&a),
        Some(Command::Vars(a)) => vars::run(&a),
        Some(Command::Hash(a)) => hash::run(&a),
        Some(Command::Catalogs(a)) => catalogs::run(&a),
        Some(Command::Import(a)) => import::run(&a),
        Some(Command::Export(a)) => export::run(&a),
        Some(Command::Lift(a)) => lift::run(&a),
        Some(Command::Restore(a)) => restore::run(&a),
        Some(Command::Check(a)) => check::run(&a),
        Some(Command::Mount(a)) => mount::run(&a),
        Some(Command::Build(a)) => build::run(&a, &cli.global),
        Some(Command::Prepare(a)) => prepare::run(&a),
        Some(Command::Pull(a)) => pull::run(&a),
        Some(Command::Doctor(a)) => doctor::run(&a),
        Some(Command::Gc(a)) => gc::run(&a),
        Some(Command::InstallShim(a)) => shim::install(&a),
        Some(Command::RccShim(a)) => shim::dispatch(&a),
        Some(Command::Serve(a)) => serve::run(&a),
        Some(Command::Keep) => serve::keep(),
        Some(Command::BuildImage(a)) => image::run(&a),
        Some(Command::Servers(a)) => servers::run(&a),
    }
}
