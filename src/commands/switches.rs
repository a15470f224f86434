//! The `VHRUN_*` switches, read from the environment once, here at the
//! edge, and handed to the library as plain options (README lists them).
//! Below `commands/` nothing reads a `VHRUN_*` variable.

use std::ffi::OsString;
use std::path::PathBuf;

/// Every switch's raw value: `None` when unset.
#[derive(Debug, Clone, Default)]
pub struct Switches {
    /// `VHRUN_RCC`: the rcc that builds environments (empty: none).
    pub rcc: Option<OsString>,
}

impl Switches {
    pub fn from_env() -> Switches {
        Switches {
            rcc: std::env::var_os("VHRUN_RCC"),
        }
    }

    /// The rcc `vhrun build` hands environments to, if any.
    pub fn build_rcc(&self) -> Option<PathBuf> {
        crate::rcc::for_builds(self.rcc.as_deref(), std::env::var_os("PATH").as_deref())
    }
}

/// `off` or `0` switches a feature off.
pub fn is_off(v: Option<&std::ffi::OsStr>) -> bool {
    v.is_some_and(|v| v == "off" || v == "0")
}
