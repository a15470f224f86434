use crate::cli::ExportArgs;
use crate::error::{Error, Result};

pub fn run(_args: &ExportArgs) -> Result<i32> {
    Err(Error::Internal("vhrun export: not implemented yet".into()))
}
