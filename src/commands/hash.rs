use crate::cli::HashArgs;
use crate::error::{Error, Result};

pub fn run(_args: &HashArgs) -> Result<i32> {
    Err(Error::Internal("vhrun hash: not implemented yet".into()))
}
