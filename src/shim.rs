//! `rcc` as a drop-in: `vhrun install-shim DIR` writes `DIR/rcc`, a small
//! POSIX sh script. Put DIR first on PATH and
//!
//! - `rcc run --virtual ...` and `rcc task run --virtual ...` (also the
//!   aliases `r` and `t r`) run through `vhrun run`, rcc's flags mapped;
//! - every other command goes, byte for byte unchanged, to the real rcc:
//!   the first `rcc` on PATH that is not a shim.
//!
//! Why a script rather than a symlink to vhrun dispatching on argv[0]: a
//! shell that finds `rcc` on PATH passes only the name as argv[0], so a
//! symlinked vhrun could not tell which PATH entry it came from; the kernel
//! gives a script its full path as `$0`. The script also names the vhrun it
//! calls, fails with a clear line if that vhrun is gone, and carries a
//! marker ([`MARKER`]) by which every shim recognises the others when it
//! looks for the real rcc. All parsing happens in vhrun (`vhrun rcc-shim`,
//! hidden), so the script stays three lines of logic.
//!
//! rcc's flags (rcc-facts.md §8) are parsed as cobra/pflag does
//! (`--flag value`, `--flag=value`, `-r value`, `-rvalue`, `-r=value`,
//! flags anywhere, `--` ends them). Mapped: `-r/--robot`, `-t/--task`,
//! `-e/--environment`, `-s/--space`, `--controller`, `--dev`, `-w/--workspace`
//! (only `RC_WORKSPACE_ID`), positional
//! arguments (appended to the task), `--silent` (-q), `--debug` (-v),
//! `--trace` (-vv). Always added: `--rcc-exit-codes` (rcc's 10 for a failed
//! task). Accepted with a note on stderr because vhrun cannot honour them:
//! `--force`, `--minutes`, `--graceperiod`, `--account`,
//! `--externally-managed`, `--no-build`, `--config`, `--liveonly`,
//! `--unmanaged`. Accepted silently (vhrun already behaves so, or they do
//! not change a run): `--interactive`, `--no-outputs`, and the remaining
//! global flags. An unknown flag is an error, as in rcc.
//!
//! The run started through a shim gets `VHRUN_RCC_EXE` = the shim, so the
//! task's `RCC_EXE` is the shim (a task calling `$RCC_EXE holotree ...`
//! reaches the real rcc), and `VHRUN_RCC` = the real rcc (or empty), so a
//! build goes straight to it. User documentation: docs/shim.md.

use crate::error::{Error, IoContext, Result};
use crate::paths::absolute;
use crate::rcc::{find_real_rcc, is_shim, MARKER};
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The script installed as `DIR/rcc`, calling `vhrun`.
pub fn script(vhrun: &Path) -> String {
    let q = sh_quote(vhrun.as_os_str());
    format!(
        r#"#!/bin/sh
# {MARKER} 1: installed by `vhrun install-shim`.
# `rcc run --virtual ...` and `rcc task run --virtual ...` run through vhrun;
# every other rcc command goes, unchanged, to the first real rcc on PATH
# (shims like this one are skipped). Delete this file to undo.
VHRUN={q}
if [ ! -x "$VHRUN" ]; then
    echo "rcc shim $0: vhrun is no longer at $VHRUN; reinstall the shim (vhrun install-shim) or delete $0" >&2
    exit 127
fi
exec "$VHRUN" rcc-shim --shim "$0" -- "$@"
"#
    )
}

/// Single-quote `s` for sh.
fn sh_quote(s: &OsStr) -> String {
    format!("'{}'", s.to_string_lossy().replace('\'', r"'\''"))
}

/// Write `dir/rcc` (creating `dir`), replacing an older shim but never
/// anything else. Returns the shim's path.
pub fn install(dir: &Path, vhrun: &Path) -> Result<PathBuf> {
    if !vhrun.is_absolute() {
        return Err(Error::Usage(format!(
            "the vhrun the shim calls must be an absolute path: {}",
            vhrun.display()
        )));
    }
    if !crate::paths::is_executable(vhrun) {
        return Err(Error::bad_input(vhrun, "not an executable file"));
    }
    crate::paths::mkdir_all(dir, 0o755)?;
    let target = dir.join("rcc");
    if std::fs::symlink_metadata(&target).is_ok() && !is_shim(&target) {
        return Err(Error::bad_input(
            &target,
            "exists and is not a vhrun shim; install the shim into another directory \
             and put that one first on PATH",
        ));
    }
    let mut tmp = tempfile::Builder::new()
        .prefix(".rcc-shim")
        .tempfile_in(dir)
        .at(dir)?;
    std::io::Write::write_all(&mut tmp, script(vhrun).as_bytes()).at(tmp.path())?;
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).at(tmp.path())?;
    tmp.persist(&target)
        .map_err(|e| Error::io(&target, e.error))?;
    Ok(target)
}

/// `RCC_EXE` for a task: the shim when the run came through one (so a task
/// that calls `$RCC_EXE` reaches rcc's other commands), else vhrun. The
/// shim says so in the environment vhrun inherited (`inherited`).
pub fn rcc_exe(inherited: &[(OsString, OsString)]) -> PathBuf {
    inherited
        .iter()
        .rev()
        .find(|(k, _)| k == RCC_EXE_VAR)
        .map(|(_, v)| v)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::current_exe().ok())
        .unwrap_or_else(|| PathBuf::from("vhrun"))
}

/// Set by the shim for the vhrun it starts: the shim's own path.
pub const RCC_EXE_VAR: &str = "VHRUN_RCC_EXE";

/// What an rcc command line becomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dispatch {
    /// `vhrun <args>` (global flags, then `run ...`).
    Vhrun {
        args: Vec<OsString>,
        /// One line per flag accepted but not honoured.
        notes: Vec<String>,
        silent: bool,
    },
    /// Anything else: the real rcc, with the arguments unchanged.
    Rcc,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Takes {
    Value,
    Bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Use {
    Map(&'static str),
    Note(&'static str),
    Accept,
}

struct Flag {
    long: &'static str,
    short: Option<char>,
    takes: Takes,
    usage: Use,
}

const fn flag(long: &'static str, short: Option<char>, takes: Takes, usage: Use) -> Flag {
    Flag {
        long,
        short,
        takes,
        usage,
    }
}

const TOKENS: &str = "ignored: vhrun does not fetch Control Room tokens";
use Takes::{Bool, Value};
use Use::{Accept, Map, Note};

/// rcc's flags for `run` / `task run` (cmd/run.go, cmd/task.go), then its
/// global ones (cmd/root.go from `--controller` on), plus `--virtual`.
static FLAGS: &[Flag] = &[
    flag("virtual", None, Bool, Accept),
    flag("robot", Some('r'), Value, Map("-r")),
    flag("task", Some('t'), Value, Map("-t")),
    flag("environment", Some('e'), Value, Map("-e")),
    flag("space", Some('s'), Value, Map("--space")),
    flag("dev", None, Bool, Map("--dev")),
    flag("force", Some('f'), Bool, Note("ignored: environments are immutable; a missing one is built")),
    flag("workspace", Some('w'), Value, Map("-w")),
    flag("minutes", Some('m'), Value, Note(TOKENS)),
    flag("graceperiod", None, Value, Note(TOKENS)),
    flag("account", None, Value, Note(TOKENS)),
    flag("interactive", None, Bool, Accept),
    flag("no-outputs", None, Bool, Accept),
    flag("externally-managed", None, Bool, Note("ignored: the environment is read-only to the task; its writes go to a throwaway overlay")),
    flag("controller", None, Value, Map("--controller")),
    flag("silent", None, Bool, Map("-q")),
    flag("debug", None, Bool, Map("-v")),
    flag("trace", None, Bool, Map("-vv")),
    flag("no-build", None, Bool, Note("ignored: vhrun builds a missing environment")),
    flag("config", None, Value, Note("ignored: vhrun reads no rcc.yaml")),
    flag("liveonly", None, Bool, Note("ignored: vhrun never builds from a live environment")),
    flag("unmanaged", None, Bool, Note("ignored: vhrun mounts managed spaces only")),
    flag("pprof", None, Value, Accept),
    flag("tag", None, Value, Accept),
    flag("anything", None, Value, Accept),
    flag("workers", None, Value, Accept),
    flag("log-hide", None, Value, Accept),
    flag("robocorp", None, Bool, Accept),
    flag("no-retry-build", None, Bool, Accept),
    flag("lockless", None, Bool, Accept),
    flag("colorless", None, Bool, Accept),
    flag("nocache", None, Bool, Accept),
    flag("numbers", None, Bool, Accept),
    flag("timeline", None, Bool, Accept),
    flag("strict", None, Bool, Accept),
    flag("warranty-voided", None, Bool, Accept),
    flag("no-temp-management", None, Bool, Accept),
    flag("no-pyc-management", None, Bool, Accept),
    flag("bundled", None, Bool, Accept),
];

fn by_long(name: &str) -> Option<&'static Flag> {
    FLAGS.iter().find(|f| f.long == name)
}

fn by_short(c: char) -> Option<&'static Flag> {
    FLAGS.iter().find(|f| f.short == Some(c))
}

/// One parsed flag occurrence.
struct Seen {
    flag: &'static Flag,
    /// Value flags: the value; bool flags: "true"/"false" text if given.
    value: Option<OsString>,
}

/// Split `args` into flags and positionals as pflag does. Unknown flags are
/// an error when `strict`, else taken as bools (only the command words
/// matter then).
fn scan(args: &[OsString], strict: bool) -> Result<(Vec<Seen>, Vec<OsString>)> {
    let mut seen = Vec::new();
    let mut pos = Vec::new();
    let mut it = args.iter();
    let unknown = |what: String| Error::Usage(format!("rcc run --virtual: unknown flag {what}"));
    while let Some(a) = it.next() {
        let b = a.as_bytes();
        if b == b"--" {
            pos.extend(it.by_ref().cloned());
            break;
        }
        if let Some(rest) = b.strip_prefix(b"--") {
            let (name, inline) = match memchr::memchr(b'=', rest) {
                Some(i) => (
                    &rest[..i],
                    Some(OsStr::from_bytes(&rest[i + 1..]).to_owned()),
                ),
                None => (rest, None),
            };
            let name = String::from_utf8_lossy(name);
            let Some(flag) = by_long(&name) else {
                if strict {
                    return Err(unknown(format!("--{name}")));
                }
                continue;
            };
            let value = match (flag.takes, inline) {
                (Value, Some(v)) => Some(v),
                (Value, None) => Some(it.next().cloned().ok_or_else(|| {
                    Error::Usage(format!("rcc: flag needs an argument: --{name}"))
                })?),
                (Bool, v) => v,
            };
            seen.push(Seen { flag, value });
        } else if b.len() > 1 && b[0] == b'-' {
            // Shorthands: bools may be combined; a value shorthand takes the
            // rest of the word (after an optional '='), else the next word.
            let mut i = 1;
            while i < b.len() {
                let c = b[i] as char;
                let Some(flag) = by_short(c) else {
                    if strict {
                        return Err(unknown(format!("-{c} (in {})", a.to_string_lossy())));
                    }
                    break;
                };
                if flag.takes == Bool {
                    seen.push(Seen { flag, value: None });
                    i += 1;
                    continue;
                }
                let rest = &b[i + 1..];
                let rest = rest.strip_prefix(b"=").unwrap_or(rest);
                let value = if rest.is_empty() {
                    it.next()
                        .cloned()
                        .ok_or_else(|| Error::Usage(format!("rcc: flag needs an argument: -{c}")))?
                } else {
                    OsStr::from_bytes(rest).to_owned()
                };
                seen.push(Seen {
                    flag,
                    value: Some(value),
                });
                break;
            }
        } else {
            pos.push(a.clone());
        }
    }
    Ok((seen, pos))
}

fn truthy(v: &Option<OsString>) -> Result<bool> {
    match v
        .as_deref()
        .map(|v| v.to_string_lossy().to_ascii_lowercase())
    {
        None => Ok(true),
        Some(s) if matches!(s.as_str(), "1" | "t" | "true") => Ok(true),
        Some(s) if matches!(s.as_str(), "0" | "f" | "false") => Ok(false),
        Some(s) => Err(Error::Usage(format!("rcc: invalid boolean value {s:?}"))),
    }
}

/// How many leading positionals name the command, if it is `run` or
/// `task run` (and their aliases).
fn run_command(pos: &[OsString]) -> Option<usize> {
    let word = |i: usize| pos.get(i).map(|w| w.as_bytes());
    match (word(0), word(1)) {
        (Some(b"run" | b"r"), _) => Some(1),
        (Some(b"task" | b"t"), Some(b"run" | b"r")) => Some(2),
        _ => None,
    }
}

/// Decide what an rcc command line (without argv[0]) becomes.
pub fn parse(args: &[OsString]) -> Result<Dispatch> {
    // Fast and safe: without `--virtual` nothing is even parsed.
    let flags_part = args.split(|a| a == "--").next().unwrap_or(&[]);
    if !flags_part
        .iter()
        .any(|a| a == "--virtual" || a.as_bytes().starts_with(b"--virtual="))
    {
        return Ok(Dispatch::Rcc);
    }
    let (_, pos) = scan(args, false)?;
    let Some(words) = run_command(&pos) else {
        return Ok(Dispatch::Rcc);
    };
    let (seen, pos) = scan(args, true)?;
    let mut mapped: Vec<(&'static str, Option<OsString>)> = Vec::new();
    let mut notes: Vec<String> = Vec::new();
    let (mut silent, mut debug, mut trace, mut virtual_on) = (false, false, false, false);
    for s in seen {
        let f = s.flag;
        let on = f.takes == Value || truthy(&s.value)?;
        match (f.long, f.usage) {
            ("virtual", _) => virtual_on = on,
            ("silent", _) => silent = on,
            ("debug", _) => debug = on,
            ("trace", _) => trace = on,
            (_, Accept) => {}
            (long, Note(why)) => {
                let note = format!("--{long}: {why}");
                if on && !notes.contains(&note) {
                    notes.push(note);
                }
            }
            (_, Map(to)) => {
                // pflag: the last occurrence wins.
                mapped.retain(|(k, _)| *k != to);
                if on {
                    mapped.push((to, s.value.filter(|_| f.takes == Value)));
                }
            }
        }
    }
    if !virtual_on {
        return Ok(Dispatch::Rcc);
    }
    let global: Vec<OsString> = match (silent, trace, debug) {
        (true, _, _) => vec!["-q".into()],
        (_, true, _) => vec!["-vv".into()],
        (_, _, true) => vec!["-v".into()],
        _ => vec![],
    };
    let mut out = global;
    out.push("run".into());
    for (to, value) in mapped {
        out.push(to.into());
        out.extend(value);
    }
    out.push("--rcc-exit-codes".into());
    let task_args = &pos[words..];
    if !task_args.is_empty() {
        out.push("--".into());
        out.extend(task_args.iter().cloned());
    }
    Ok(Dispatch::Vhrun {
        args: out,
        notes,
        silent,
    })
}

/// `vhrun rcc-shim --shim PATH -- ARGS`: what the script runs. Replaces
/// this process with vhrun or the real rcc; returns only on failure.
/// `vhrun_rcc`: the caller's `VHRUN_RCC`, if set (it is passed on as is).
pub fn dispatch(shim: &Path, args: &[OsString], vhrun_rcc: Option<&OsStr>) -> Result<i32> {
    use std::os::unix::process::CommandExt;
    let path_var = std::env::var_os("PATH");
    let real = find_real_rcc(path_var.as_deref(), Some(shim));
    match parse(args)? {
        Dispatch::Rcc => {
            let Some(rcc) = real else {
                return Err(Error::unavailable(
                    format!(
                        "rcc shim {}: no real rcc on PATH for `rcc {}` (the shim itself only \
                         runs `rcc run --virtual` and `rcc task run --virtual`)",
                        shim.display(),
                        args.first()
                            .map(|a| a.to_string_lossy())
                            .unwrap_or_default()
                    ),
                    crate::rcc::INSTALL_HINT,
                ));
            };
            let e = std::process::Command::new(&rcc).args(args).exec();
            Err(Error::io(rcc, e))
        }
        Dispatch::Vhrun {
            args: vargs,
            notes,
            silent,
        } => {
            if !silent {
                for n in &notes {
                    eprintln!("vhrun: note: {n}");
                }
            }
            let exe = std::env::current_exe().map_err(|e| Error::io("/proc/self/exe", e))?;
            let mut cmd = std::process::Command::new(&exe);
            cmd.args(&vargs).env(RCC_EXE_VAR, absolute(shim));
            // A build the run needs goes straight to the real rcc (or to
            // vhrun's own builder when there is none), never back here.
            if vhrun_rcc.is_none() {
                cmd.env(
                    "VHRUN_RCC",
                    real.map(PathBuf::into_os_string).unwrap_or_default(),
                );
            }
            tracing::debug!("rcc shim: {} {:?}", exe.display(), vargs);
            let e = cmd.exec();
            Err(Error::io(exe, e))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    fn vhrun_args(v: &[&str]) -> (Vec<String>, Vec<String>) {
        match parse(&os(v)).unwrap() {
            Dispatch::Vhrun { args, notes, .. } => (
                args.iter()
                    .map(|a| a.to_string_lossy().into_owned())
                    .collect(),
                notes,
            ),
            Dispatch::Rcc => panic!("{v:?} went to rcc"),
        }
    }

    #[test]
    fn other_commands_go_to_rcc() {
        for v in [
            &["holotree", "list"][..],
            &["run", "-r", "robot.yaml"],
            &["holotree", "variables", "--virtual", "-r", "x"],
            &["run", "--", "--virtual"],
            &["run", "--virtual=false", "-t", "x"],
            &[],
            &["--version"],
            &["task", "script", "--virtual", "--", "ls"],
        ] {
            assert_eq!(parse(&os(v)).unwrap(), Dispatch::Rcc, "{v:?}");
        }
    }

    #[test]
    fn run_flags_are_mapped() {
        let (a, notes) = vhrun_args(&[
            "--controller",
            "ci",
            "run",
            "--virtual",
            "-r",
            "r.yaml",
            "--task=Main",
            "-e",
            "env.json",
            "-s",
            "space1",
            "--dev",
            "extra",
            "--",
            "-x",
            "two words",
        ]);
        assert_eq!(
            a,
            [
                "run",
                "--controller",
                "ci",
                "-r",
                "r.yaml",
                "-t",
                "Main",
                "-e",
                "env.json",
                "--space",
                "space1",
                "--dev",
                "--rcc-exit-codes",
                "--",
                "extra",
                "-x",
                "two words"
            ]
        );
        assert!(notes.is_empty());
    }

    #[test]
    fn aliases_shorthands_and_last_wins() {
        let (a, _) = vhrun_args(&[
            "t",
            "r",
            "--virtual",
            "-rfirst.yaml",
            "-r=second.yaml",
            "-tT",
        ]);
        assert_eq!(
            a,
            ["run", "-r", "second.yaml", "-t", "T", "--rcc-exit-codes"]
        );
        let (a, _) = vhrun_args(&["r", "--virtual=true", "--silent", "--debug"]);
        assert_eq!(a, ["-q", "run", "--rcc-exit-codes"]);
        let (a, _) = vhrun_args(&["task", "run", "--virtual", "--trace", "--dev=false"]);
        assert_eq!(a, ["-vv", "run", "--rcc-exit-codes"]);
    }

    #[test]
    fn inapplicable_flags_are_noted() {
        let (a, notes) = vhrun_args(&[
            "run",
            "--virtual",
            "-f",
            "-w",
            "ws",
            "--minutes",
            "30",
            "--interactive",
            "--no-outputs",
            "--tag",
            "ci",
            "--externally-managed",
            "--colorless",
        ]);
        assert_eq!(a, ["run", "-w", "ws", "--rcc-exit-codes"]);
        assert_eq!(notes.len(), 3, "{notes:?}");
        assert!(notes[0].starts_with("--force: ignored"));
        assert!(notes[1].starts_with("--minutes: ignored"));
    }

    #[test]
    fn bad_flags_are_errors() {
        for v in [
            &["run", "--virtual", "--bogus"][..],
            &["run", "--virtual", "-x"],
            &["run", "--virtual", "-r"],
            &["run", "--virtual", "--dev=maybe"],
        ] {
            let e = parse(&os(v)).unwrap_err();
            assert_eq!(e.exit_code(), crate::error::exit::USAGE, "{v:?}: {e}");
        }
    }

    #[test]
    fn script_quotes_the_vhrun_path() {
        let s = script(Path::new("/opt/it's here/vhrun"));
        assert!(s.contains(r#"VHRUN='/opt/it'\''s here/vhrun'"#), "{s}");
        assert!(s.starts_with("#!/bin/sh\n"));
        assert!(s.contains(MARKER));
    }
}
