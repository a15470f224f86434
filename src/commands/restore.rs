use crate::cli::RestoreArgs;
use crate::error::{Error, Result};

pub fn run(_args: &RestoreArgs) -> Result<i32> {
    Err(Error::Internal("vhrun restore: not implemented yet".into()))
}
