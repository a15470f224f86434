use crate::cli::ExecArgs;
use crate::error::{Error, Result};

pub fn run(_args: &ExecArgs) -> Result<i32> {
    Err(Error::Internal("vhrun exec: not implemented yet".into()))
}
