use crate::cli::LiftArgs;
use crate::error::{Error, Result};

pub fn run(_args: &LiftArgs) -> Result<i32> {
    Err(Error::Internal("vhrun lift: not implemented yet".into()))
}
