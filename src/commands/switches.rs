//! The `VHRUN_*` switches, read from the environment once, here at the
//! edge, and handed to the library as plain options (README's
//! "Environment variables" lists them). Below `commands/` nothing reads a
//! `VHRUN_*` variable, except `VHRUN_HOME` (`hololib::Locations`, with
//! rcc's own `ROBOCORP_HOME`) and `VHRUN_LOG` (`logging`, before anything
//! else runs).

use crate::error::{Error, Result};
use crate::lower::fuse::PassthroughMode;
use crate::lower::{self, Mode, Prefetch};
use crate::remote::lazy::Batching;
use std::ffi::{OsStr, OsString};
use std::path::PathBuf;
use std::time::Duration;

/// Every switch's raw value: `None` when unset.
#[derive(Debug, Clone, Default)]
pub struct Switches {
    /// `VHRUN_RCC`: the rcc that builds environments (empty: none).
    pub rcc: Option<OsString>,
    /// `VHRUN_UV=off|PATH`: the builder's pip layer with pip, or this uv.
    pub uv: Option<OsString>,
    /// `VHRUN_IMAGE=off`: never mount a kernel image.
    pub image: Option<OsString>,
    /// `VHRUN_SERVER=off`: a FUSE mount per run, no warm server.
    pub server: Option<OsString>,
    /// `VHRUN_SERVER_IDLE=SECONDS`: how long a new server waits for runs.
    pub server_idle: Option<OsString>,
    /// `VHRUN_PASSTHROUGH=off`: serve reads even where passthrough works.
    pub passthrough: Option<OsString>,
    /// `VHRUN_PREFETCH=off|sync`: no working-set replay, or before the task.
    pub prefetch: Option<OsString>,
    /// `VHRUN_MODE=auto|virtual|copy` (`--mode` wins).
    pub mode: Option<OsString>,
    /// `VHRUN_REMOTE=lazy|pull`: how a catalog missing here comes from
    /// `RCC_REMOTE_ORIGIN` (`--lazy` wins).
    pub remote: Option<OsString>,
    /// `VHRUN_LAZY_BATCH=dir|file`: what one lazy miss fetches.
    pub lazy_batch: Option<OsString>,
    /// `VHRUN_COMPILE_AHEAD=off`: no helper compiling the modules a lazily
    /// served tree predicts.
    pub compile_ahead: Option<OsString>,
    /// `VHRUN_TAKEOVER=off`: warm servers without a keeper (a crash ends
    /// their runs).
    pub takeover: Option<OsString>,
    /// `VHRUN_OVERLAY_SIZE=SIZE`: the most a run's in-memory write layer
    /// holds.
    pub overlay_size: Option<OsString>,
}

impl Switches {
    pub fn from_env() -> Switches {
        let var = std::env::var_os;
        Switches {
            rcc: var("VHRUN_RCC"),
            uv: var("VHRUN_UV"),
            image: var("VHRUN_IMAGE"),
            server: var("VHRUN_SERVER"),
            server_idle: var("VHRUN_SERVER_IDLE"),
            passthrough: var("VHRUN_PASSTHROUGH"),
            prefetch: var("VHRUN_PREFETCH"),
            mode: var("VHRUN_MODE"),
            remote: var("VHRUN_REMOTE"),
            lazy_batch: var("VHRUN_LAZY_BATCH"),
            compile_ahead: var("VHRUN_COMPILE_AHEAD"),
            takeover: var("VHRUN_TAKEOVER"),
            overlay_size: var("VHRUN_OVERLAY_SIZE"),
        }
    }

    /// Whether a warm server keeps a keeper for a successor.
    pub fn takeover(&self) -> bool {
        !is_off(self.takeover.as_deref())
    }

    /// Whether a run serves a missing catalog lazily (`--lazy` given, or
    /// `VHRUN_REMOTE=lazy`), and how it batches. `--lazy` with no origin
    /// to fetch from is a usage error; `VHRUN_REMOTE=lazy` (fleet-wide
    /// configuration) then changes nothing.
    pub fn lazy(&self, flag: bool) -> Result<Option<Batching>> {
        let text = |v: &OsStr| v.to_str().unwrap_or("?").trim().to_string();
        let from_env = match self.remote.as_deref().map(text).as_deref() {
            None | Some("") | Some("pull") => false,
            Some("lazy") => true,
            Some(v) => {
                return Err(Error::Usage(format!(
                    "VHRUN_REMOTE={v:?}: expected lazy or pull"
                )))
            }
        };
        let batching = match self.lazy_batch.as_deref() {
            None => Batching::default(),
            Some(v) => text(v)
                .parse()
                .map_err(|e| Error::Usage(format!("VHRUN_LAZY_BATCH={e}")))?,
        };
        if flag && crate::remote::origin::origin_from_env().is_none() {
            return Err(Error::Usage(format!(
                "--lazy serves from an rccremote origin: set {}",
                crate::remote::origin::ORIGIN_ENV
            )));
        }
        Ok((flag || from_env).then_some(batching))
    }

    /// The bound of a run's in-memory write layer (`VHRUN_OVERLAY_SIZE`;
    /// unset or empty: tmpfs's default).
    pub fn overlay_size(&self) -> Result<Option<crate::sandbox::OverlaySize>> {
        match self.overlay_size.as_deref() {
            None => Ok(None),
            Some(v) if v.is_empty() => Ok(None),
            Some(v) => v
                .to_str()
                .unwrap_or("?")
                .parse()
                .map(Some)
                .map_err(|e| Error::Usage(format!("VHRUN_OVERLAY_SIZE={e}"))),
        }
    }

    /// How the builder installs a pip layer (`VHRUN_UV`).
    pub fn uv(&self) -> crate::builder::uv::Choice {
        crate::builder::uv::Choice::parse(self.uv.as_deref())
    }

    /// The rcc `vhrun build` hands environments to, if any.
    pub fn build_rcc(&self) -> Option<PathBuf> {
        crate::rcc::for_builds(self.rcc.as_deref(), std::env::var_os("PATH").as_deref())
    }

    /// How runs provide their tree, `--mode` (if given) over `VHRUN_MODE`.
    pub fn lower_for_run(&self, mode: Option<Mode>) -> Result<lower::Options> {
        let mode = match (mode, self.mode.as_deref()) {
            (Some(m), _) => m,
            (None, None) => Mode::default(),
            (None, Some(v)) => v
                .to_str()
                .unwrap_or("?")
                .trim()
                .parse()
                .map_err(|e| Error::Usage(format!("VHRUN_MODE={}", e)))?,
        };
        Ok(lower::Options {
            mode,
            ..self.lower()
        })
    }

    /// How runs provide their tree.
    pub fn lower(&self) -> lower::Options {
        let default = lower::Options::default();
        lower::Options {
            image: !is_off(self.image.as_deref()),
            server: !is_off(self.server.as_deref()),
            server_idle: self
                .server_idle
                .as_deref()
                .and_then(|v| v.to_str()?.trim().parse::<f64>().ok())
                .and_then(|s| Duration::try_from_secs_f64(s).ok())
                .unwrap_or(default.server_idle),
            passthrough: if is_off(self.passthrough.as_deref()) {
                PassthroughMode::Off
            } else {
                PassthroughMode::Auto
            },
            prefetch: match self.prefetch.as_deref() {
                v if is_off(v) => Prefetch::Off,
                Some(v) if v == "sync" => Prefetch::Before,
                _ => Prefetch::Alongside,
            },
            compile_ahead: !is_off(self.compile_ahead.as_deref()),
            mode: default.mode,
        }
    }
}

/// `off` or `0` switches a feature off.
fn is_off(v: Option<&OsStr>) -> bool {
    v.is_some_and(|v| v == "off" || v == "0")
}
