use crate::cli::RunArgs;
use crate::error::{Error, Result};

pub fn run(_args: &RunArgs) -> Result<i32> {
    Err(Error::Internal("vhrun run: not implemented yet".into()))
}
