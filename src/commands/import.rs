use crate::cli::ImportArgs;
use crate::error::{Error, Result};

pub fn run(_args: &ImportArgs) -> Result<i32> {
    Err(Error::Internal("vhrun import: not implemented yet".into()))
}
