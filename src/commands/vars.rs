use crate::cli::VarsArgs;
use crate::error::{Error, Result};

pub fn run(_args: &VarsArgs) -> Result<i32> {
    Err(Error::Internal("vhrun vars: not implemented yet".into()))
}
