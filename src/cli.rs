//! The command line, as clap derive types. `main.rs` parses it ([`parse`]);
//! the `commands` module runs it.

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use std::ffi::OsString;
use std::path::PathBuf;

/// The command line of this process.
///
/// clap builds every subcommand's arguments before it parses any (about
/// 240 kB of heap and 0.7 M instructions for vhrun's 23 subcommands: a
/// twentieth of a run's activation). The run paths, `vhrun run`, `vhrun
/// exec` and the bare `vhrun -r robot.yaml`, are first parsed by a command
/// of just their own arguments and the global ones; anything that does not
/// parse there (another subcommand, `--help`, a mistake) is parsed again
/// by the whole [`Cli`], which says what clap always says.
pub fn parse() -> Cli {
    parse_from(crate::sys::startup::args_os()).unwrap_or_else(|e| e.exit())
}

/// [`parse`] of `args` (the program name first).
pub fn parse_from<I: IntoIterator<Item = OsString>>(args: I) -> Result<Cli, clap::Error> {
    let args: Vec<OsString> = args.into_iter().collect();
    fast_parse(&args).map_or_else(|| Cli::try_parse_from(&args), Ok)
}

fn fast_parse(args: &[OsString]) -> Option<Cli> {
    let top = clap::Command::new("vhrun").no_binary_name(false);
    let top = GlobalArgs::augment_args(top);
    // The first word that is not a global flag names the subcommand.
    let global_flags = ["-v", "-vv", "-vvv", "--verbose", "-q", "--quiet"];
    let word: Option<&str> = args
        .iter()
        .skip(1)
        .map(|a| a.to_str().unwrap_or(""))
        .find(|a| !global_flags.contains(a));
    let (global, command) = match word {
        Some(word @ ("run" | "exec")) => {
            let name = if word == "run" { "run" } else { "exec" };
            let sub = clap::Command::new(name);
            let sub = match name {
                "run" => RunArgs::augment_args(sub),
                _ => ExecArgs::augment_args(sub),
            };
            let mut m = top.subcommand(sub).try_get_matches_from(args).ok()?;
            let (_, mut sm) = m.remove_subcommand()?;
            let command = match name {
                "run" => Command::Run(RunArgs::from_arg_matches_mut(&mut sm).ok()?),
                _ => Command::Exec(ExecArgs::from_arg_matches_mut(&mut sm).ok()?),
            };
            (
                GlobalArgs::from_arg_matches_mut(&mut m).ok()?,
                Some(command),
            )
        }
        // An option first: `vhrun -r robot.yaml -t task`, unless a
        // subcommand follows (which this command does not take).
        Some(w) if w.starts_with('-') => {
            let mut m = RunArgs::augment_args(top).try_get_matches_from(args).ok()?;
            let run = RunArgs::from_arg_matches_mut(&mut m).ok()?;
            return Some(Cli {
                global: GlobalArgs::from_arg_matches_mut(&mut m).ok()?,
                run,
                command: None,
            });
        }
        _ => return None,
    };
    Some(Cli {
        global,
        // Read only without a subcommand (`commands::dispatch`).
        run: RunArgs::default(),
        command,
    })
}

/// The whole command line's definition (help, completions, tests).
pub fn command() -> clap::Command {
    Cli::command()
}

#[derive(Debug, Parser)]
#[command(
    name = "vhrun",
    version,
    about = "Run rcc robots over a virtual holotree: nothing copied, nothing left behind",
    subcommand_negates_reqs = true
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,

    /// Without a subcommand, `vhrun -r robot.yaml -t task` runs the task
    /// (read only then).
    #[command(flatten)]
    pub run: RunArgs,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Args, Clone, Default)]
pub struct GlobalArgs {
    /// More log output (-v info with timings, -vv debug, -vvv trace).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Only errors.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a robot task in the sandbox (like `rcc run --virtual`).
    Run(RunArgs),
    /// Run any command in the robot's sandbox and environment.
    Exec(ExecArgs),
    /// Print the environment a task would get, as `rcc holotree variables`.
    Vars(VarsArgs),
    /// Blueprint hash of conda.yaml / package.yaml files, as rcc computes it.
    Hash(HashArgs),
    /// List the catalogs of every hololib vhrun reads.
    Catalogs(CatalogsArgs),
    /// Import `rcc holotree export` zips into the hololib.
    Import(ImportArgs),
    /// Export a catalog and its blobs as a zip that `rcc holotree import` takes.
    Export(ExportArgs),
    /// Add a built environment directory to the hololib, as rcc's lift does.
    Lift(LiftArgs),
    /// Copy a catalog out into a directory, as rcc's restore does.
    Restore(RestoreArgs),
    /// Verify every blob and catalog of the hololib (read only).
    Check(CheckArgs),
    /// Serve a catalog read-only with FUSE at MOUNTPOINT until interrupted.
    Mount(MountArgs),
    /// Build the robot's environment if its catalog is missing (rcc, else vhrun's builder).
    Build(BuildArgs),
    /// Build the robot's environment and, as root, its kernel image: later
    /// runs mount it instead of serving the tree with FUSE.
    Prepare(PrepareArgs),
    /// Pull the robot's catalog and its missing blobs from an rccremote
    /// origin (like `rcc holotree pull`).
    Pull(PullArgs),
    /// Check what this machine offers vhrun (FUSE, namespaces, overlayfs, builder tools).
    Doctor(DoctorArgs),
    /// Remove unused blob-cache entries and stale run directories (never the hololib).
    Gc(GcArgs),
    /// List the warm servers (one per environment in use), or stop them.
    Servers(ServersArgs),
    /// Install an `rcc` wrapper into DIR: `rcc run --virtual` runs through
    /// vhrun, every other rcc command goes to the real rcc further down PATH.
    InstallShim(InstallShimArgs),
    /// What the installed `rcc` wrapper runs (not for direct use).
    #[command(hide = true)]
    RccShim(RccShimArgs),
    /// The warm server of one catalog, started by runs (not for direct use).
    #[command(name = "__serve", hide = true)]
    Serve(ServeArgs),
    /// A warm server's keeper, started by the server (not for direct use).
    #[command(name = "__keep", hide = true)]
    Keep,
    /// A catalog's kernel image, built in the background for a warm
    /// server (not for direct use: `vhrun prepare`).
    #[command(name = "__image", hide = true)]
    BuildImage(BuildImageArgs),
}

#[derive(Debug, Args, Clone, Default)]
pub struct RobotArgs {
    /// The robot.yaml to use.
    #[arg(short = 'r', long = "robot", default_value = "robot.yaml")]
    pub robot: PathBuf,
    /// Space name (rcc's --space).
    #[arg(short = 's', long, default_value = "user")]
    pub space: String,
    /// Controller name (rcc's --controller).
    #[arg(long, default_value = "user")]
    pub controller: String,
    /// env.json whose variables are added to the task's environment.
    #[arg(short = 'e', long = "environment")]
    pub environment: Option<PathBuf>,
    /// Control Room workspace id (rcc's -w): sets RC_WORKSPACE_ID. vhrun
    /// does not authorize with Control Room: RC_API_* hosts and tokens must
    /// come from its own environment.
    #[arg(short = 'w', long, value_name = "ID")]
    pub workspace: Option<String>,
}

#[derive(Debug, Args, Clone)]
pub struct PrepareArgs {
    #[command(flatten)]
    pub robot: RobotArgs,
    /// Use this catalog instead of robot.yaml's environment.
    #[arg(long, conflicts_with = "robot")]
    pub catalog: Option<String>,
}

#[derive(Debug, Args, Clone, Default)]
pub struct SandboxArgs {
    /// Keep the run in the caller's PID namespace (no reaper).
    #[arg(long)]
    pub share_pids: bool,
    /// Keep the overlay's upper directory (the run's writes) in DIR.
    #[arg(long, value_name = "DIR")]
    pub keep_overlay: Option<PathBuf>,
    /// Reproduce rcc's variables exactly (no persistent bytecode cache).
    #[arg(long)]
    pub rcc_env: bool,
    /// After the task, print what the run cost on stderr: activation time,
    /// files and bytes opened, blobs decompressed, overlay writes, FUSE requests.
    #[arg(long)]
    pub stats: bool,
    /// Write the same as JSON to FILE (keys: docs/stats.md).
    #[arg(long, value_name = "FILE")]
    pub stats_json: Option<PathBuf>,
    /// auto: the virtual holotree where the machine allows it, else a copy
    /// of the environment (with one warning); virtual: never a copy (a
    /// refusal is exit 69); copy: always a copy, as rcc runs (default:
    /// $VHRUN_MODE, else auto).
    #[arg(long, value_name = "MODE", value_parser = parse_mode)]
    pub mode: Option<crate::lower::Mode>,
    /// A catalog missing here is served lazily from RCC_REMOTE_ORIGIN: the
    /// task starts once the catalog is fetched, each file's blobs come on
    /// its first open (default: $VHRUN_REMOTE=lazy; else pulled whole first).
    #[arg(long)]
    pub lazy: bool,
}

fn parse_mode(s: &str) -> Result<crate::lower::Mode, String> {
    s.parse()
}

#[derive(Debug, Args, Clone, Default)]
pub struct RunArgs {
    #[command(flatten)]
    pub robot: RobotArgs,
    /// Task name from robot.yaml (may be omitted when there is only one).
    #[arg(short = 't', long)]
    pub task: Option<String>,
    /// Use robot.yaml's devTasks.
    #[arg(long)]
    pub dev: bool,
    #[command(flatten)]
    pub sandbox: SandboxArgs,
    /// Exit as rcc does: 10 when the task fails, 12 when a preRunScript
    /// fails, 11 when one cannot be split into words.
    #[arg(long)]
    pub rcc_exit_codes: bool,
    /// Arguments appended to the task's command (after `--`).
    #[arg(last = true)]
    pub args: Vec<String>,
}

#[derive(Debug, Args, Clone)]
pub struct ExecArgs {
    #[command(flatten)]
    pub robot: RobotArgs,
    /// Use this catalog instead of robot.yaml's environment.
    #[arg(long, conflicts_with = "robot")]
    pub catalog: Option<String>,
    #[command(flatten)]
    pub sandbox: SandboxArgs,
    /// Testing aid: serve this plain directory as the environment instead
    /// of a catalog (no robot.yaml; vhrun's own environment is inherited).
    #[arg(
        long,
        hide = true,
        value_name = "DIR",
        requires = "env_path",
        conflicts_with = "catalog"
    )]
    pub lower_dir: Option<PathBuf>,
    /// Testing aid: where the environment appears (with --lower-dir).
    #[arg(long, hide = true, value_name = "PATH", requires = "lower_dir")]
    pub env_path: Option<PathBuf>,
    /// Testing aid: a path the command sees read-only (repeatable).
    #[arg(long = "ro-path", hide = true, value_name = "PATH")]
    pub ro_paths: Vec<PathBuf>,
    /// Testing aid: a path the command may write even below a --ro-path
    /// (repeatable).
    #[arg(long = "rw-path", hide = true, value_name = "PATH")]
    pub rw_paths: Vec<PathBuf>,
    /// Testing aid: start N threads that allocate in a loop once the
    /// namespaces exist (as FUSE workers would), to exercise forking from
    /// a multi-threaded process.
    #[arg(long, hide = true, value_name = "N", default_value_t = 0)]
    pub busy_threads: usize,
    /// Testing aid: a `sh -c` script run before the command in the same
    /// sandbox, as a preRunScript (repeatable; the first failure ends the run).
    #[arg(long = "pre-sh", hide = true, value_name = "SCRIPT")]
    pub pre_sh: Vec<String>,
    /// The command and its arguments.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

#[derive(Debug, Args, Clone)]
pub struct VarsArgs {
    #[command(flatten)]
    pub robot: RobotArgs,
    /// JSON array of {key, value} objects instead of `export K=V` lines.
    #[arg(short = 'j', long)]
    pub json: bool,
    /// Reproduce rcc's variables exactly (no persistent bytecode cache).
    #[arg(long)]
    pub rcc_env: bool,
}

#[derive(Debug, Args, Clone)]
pub struct HashArgs {
    /// conda.yaml or package.yaml files.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Include package.yaml's dev-dependencies.
    #[arg(long)]
    pub devdeps: bool,
    #[arg(short = 'j', long)]
    pub json: bool,
}

#[derive(Debug, Args, Clone)]
pub struct CatalogsArgs {
    #[arg(short = 'j', long)]
    pub json: bool,
}

#[derive(Debug, Args, Clone)]
pub struct PullArgs {
    /// The robot.yaml whose environment to pull.
    #[arg(short = 'r', long = "robot", default_value = "robot.yaml")]
    pub robot: PathBuf,
    /// The catalog to pull (`<hash>v12.<platform>`, or a blueprint hash),
    /// instead of robot.yaml's.
    #[arg(long, conflicts_with = "robot")]
    pub catalog: Option<String>,
    /// The rccremote origin URL (default: RCC_REMOTE_ORIGIN).
    #[arg(long)]
    pub origin: Option<String>,
    /// Download every blob of the catalog, also those the hololib has.
    #[arg(long, conflicts_with = "lazy")]
    pub force: bool,
    /// Fetch the catalog alone (into $VHRUN_HOME/lazy/), for runs that
    /// fetch each file's blobs on its first open (`run --lazy`).
    #[arg(long)]
    pub lazy: bool,
    /// What was fetched, as JSON on stdout, instead of the catalog name.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args, Clone)]
pub struct ImportArgs {
    #[arg(required = true)]
    pub zips: Vec<PathBuf>,
}

#[derive(Debug, Args, Clone)]
pub struct ExportArgs {
    /// Catalog file name, blueprint hash or unique part of a name.
    pub key: String,
    #[arg(short = 'o', long = "output", default_value = "hololib.zip")]
    pub output: PathBuf,
}

#[derive(Debug, Args, Clone)]
pub struct LiftArgs {
    /// The built environment directory.
    pub dir: PathBuf,
    /// The conda.yaml / package.yaml the environment was built from.
    #[arg(long)]
    pub blueprint: PathBuf,
    /// Accepted as rcc's; catalogs record an empty space, as rcc's do.
    #[arg(long, default_value = "user")]
    pub space: String,
    /// Accepted as rcc's; catalogs record an empty controller, as rcc's do.
    #[arg(long, default_value = "user")]
    pub controller: String,
    /// Store raw blobs with siphash128 digests (rcc's compress.no).
    #[arg(long)]
    pub no_compress: bool,
    /// Lift into this hololib directory instead of rcc's.
    #[arg(long, value_name = "DIR")]
    pub hololib: Option<PathBuf>,
    /// Do not write DIR/identity.yaml (the blueprint) before lifting.
    #[arg(long)]
    pub no_identity_yaml: bool,
}

#[derive(Debug, Args, Clone)]
pub struct RestoreArgs {
    /// Catalog file name, blueprint hash or unique part of a name.
    #[arg(long)]
    pub catalog: String,
    pub target: PathBuf,
    /// Do not write TARGET.meta (rcc's record of a restored space) nor take
    /// TARGET.lck: touch nothing outside TARGET.
    #[arg(long)]
    pub no_meta: bool,
}

#[derive(Debug, Args, Clone)]
pub struct CheckArgs {
    #[arg(short = 'j', long)]
    pub json: bool,
}

#[derive(Debug, Args, Clone)]
pub struct MountArgs {
    /// Catalog file name, blueprint hash or unique part of a name.
    #[arg(long, conflicts_with = "robot", required_unless_present = "robot")]
    pub catalog: Option<String>,
    /// Mount the environment of this robot.yaml.
    #[arg(short = 'r', long = "robot")]
    pub robot: Option<PathBuf>,
    /// Basename written at rewrite offsets (default: MOUNTPOINT's basename).
    #[arg(long)]
    pub target_name: Option<String>,
    /// Serve reads from vhrun even where FUSE passthrough is available.
    #[arg(long)]
    pub no_passthrough: bool,
    /// FUSE server threads.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub threads: u16,
    /// Print the server's request counters as JSON on stdout when it stops.
    #[arg(long)]
    pub stats: bool,
    /// Before reporting ready, replay the paths the previous mount of this
    /// catalog touched, so the kernel caches them.
    #[arg(long)]
    pub prefetch: bool,
    pub mountpoint: PathBuf,
}

#[derive(Debug, Args, Clone)]
pub struct BuildArgs {
    /// The robot.yaml whose environment to build.
    #[arg(short = 'r', long = "robot", default_value = "robot.yaml")]
    pub robot: PathBuf,
    /// Space name handed to rcc when rcc builds (rcc's --space).
    #[arg(short = 's', long, default_value = "user")]
    pub space: String,
    /// Controller handed to rcc when rcc builds (rcc's --controller).
    #[arg(long, default_value = "user")]
    pub controller: String,
    /// Build with this CPython (an interpreter or its prefix) with vhrun's builder, not rcc.
    #[arg(long, value_name = "PATH")]
    pub python: Option<PathBuf>,
}

#[derive(Debug, Args, Clone)]
pub struct DoctorArgs {
    /// The report as JSON.
    #[arg(short = 'j', long)]
    pub json: bool,
}

#[derive(Debug, Args, Clone)]
pub struct GcArgs {
    /// Cache entries and run directories unused for longer than this go.
    #[arg(long, default_value_t = 30)]
    pub days: u64,
    /// Only print what would be removed.
    #[arg(long)]
    pub dry_run: bool,
    /// The report as JSON.
    #[arg(short = 'j', long)]
    pub json: bool,
}

#[derive(Debug, Args, Clone)]
pub struct InstallShimArgs {
    /// Directory for the `rcc` script (created if missing); put it first on PATH.
    pub dir: PathBuf,
    /// The vhrun the wrapper calls (default: this one).
    #[arg(long, value_name = "PATH")]
    pub vhrun: Option<PathBuf>,
}

#[derive(Debug, Args, Clone)]
pub struct RccShimArgs {
    /// The wrapper script's own path (its `$0`), skipped when looking for rcc.
    #[arg(long, value_name = "PATH")]
    pub shim: PathBuf,
    /// rcc's arguments, unchanged.
    #[arg(last = true, allow_hyphen_values = true)]
    pub args: Vec<std::ffi::OsString>,
}

#[derive(Debug, Args, Clone)]
pub struct ServeArgs {
    #[arg(long)]
    pub key: String,
    #[command(flatten)]
    pub tree: TreeArgs,
    #[arg(long)]
    pub shown_as: PathBuf,
    /// Seconds without a run before the server exits.
    #[arg(long, default_value_t = 60.0)]
    pub idle: f64,
    #[arg(long)]
    pub no_passthrough: bool,
    /// Take over the live connection a keeper hands on stdin.
    #[arg(long)]
    pub takeover: bool,
}

/// A catalog's tree as a run serves it: which catalog, where its blobs
/// and their decoded cache are, the environment's directory name
/// (`lower::TreePaths::argv` writes these flags).
#[derive(Debug, Args, Clone)]
pub struct TreeArgs {
    #[arg(long)]
    pub catalog: PathBuf,
    #[arg(long)]
    pub hololib: PathBuf,
    #[arg(long)]
    pub blobs: PathBuf,
    #[arg(long)]
    pub target: String,
    /// Serve lazily: fetch missing blobs from this rccremote origin.
    #[arg(long)]
    pub origin: Option<String>,
    #[arg(long, default_value = "imports")]
    pub lazy_batch: String,
}

impl RobotArgs {
    pub fn options(&self) -> crate::run::RobotOptions {
        crate::run::RobotOptions {
            robot: self.robot.clone(),
            space: self.space.clone(),
            controller: self.controller.clone(),
            environment: self.environment.clone(),
            workspace: self.workspace.clone(),
            lazy: None,
        }
    }
}

impl SandboxArgs {
    pub fn options(&self) -> crate::run::SandboxOptions {
        crate::run::SandboxOptions {
            share_pids: self.share_pids,
            keep_overlay: self.keep_overlay.clone(),
            overlay_size: None,
            rcc_env: self.rcc_env,
            stats: self.stats,
            stats_json: self.stats_json.clone(),
        }
    }
}

#[derive(Debug, Args, Clone)]
pub struct BuildImageArgs {
    #[command(flatten)]
    pub tree: TreeArgs,
}

#[derive(Debug, Args, Clone)]
pub struct ServersArgs {
    /// Ask them to exit (no new run; each exits once its runs in flight end).
    #[arg(long, conflicts_with = "restart")]
    pub stop: bool,
    /// Replace each by a server running this vhrun, without breaking its
    /// runs in flight (after installing a new vhrun).
    #[arg(long)]
    pub restart: bool,
    /// JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(line: &str) -> Vec<OsString> {
        line.split_whitespace().map(OsString::from).collect()
    }

    /// The fast parse gives what the whole command gives, or leaves the
    /// line to it.
    #[test]
    fn the_fast_parse_agrees_with_the_whole_command() {
        let lines = [
            "vhrun -r robots/hello/robot.yaml",
            "vhrun -r robot.yaml -t task -- --extra args",
            "vhrun -v -r robot.yaml --stats",
            "vhrun run --space ci --controller gh -r robot.yaml -e env.json",
            "vhrun -vv run -r robot.yaml -t Task --rcc-exit-codes",
            "vhrun exec --catalog c34ed96c2d8a459av12.linux_amd64 -- python -c pass",
            "vhrun exec -r robot.yaml --lazy --mode copy -- sh -c true",
            "vhrun -q exec --catalog k --stats-json s.json -- true",
            "vhrun exec -v --catalog k -- true",
        ];
        for line in lines {
            let fast = fast_parse(&argv(line)).unwrap_or_else(|| panic!("{line}: not fast"));
            let whole = Cli::try_parse_from(argv(line)).unwrap();
            assert_eq!(
                format!("{:?}", fast.global),
                format!("{:?}", whole.global),
                "{line}"
            );
            assert_eq!(
                format!("{:?}", fast.command),
                format!("{:?}", whole.command),
                "{line}"
            );
            if whole.command.is_none() {
                assert_eq!(
                    format!("{:?}", fast.run),
                    format!("{:?}", whole.run),
                    "{line}"
                );
            }
        }
        // Left to the whole command: other subcommands, help, mistakes.
        for line in [
            "vhrun vars -r robot.yaml",
            "vhrun --help",
            "vhrun exec --help",
            "vhrun --version",
            "vhrun exec --no-such-flag -- true",
            "vhrun -r robot.yaml vars",
            "vhrun",
        ] {
            assert!(fast_parse(&argv(line)).is_none(), "{line}");
        }
        assert!(parse_from(argv("vhrun exec --no-such-flag -- true")).is_err());
        assert!(parse_from(argv("vhrun hash conda.yaml")).is_ok());
    }
}
