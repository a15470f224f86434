use crate::cli::MountArgs;
use crate::error::{Error, Result};

pub fn run(_args: &MountArgs) -> Result<i32> {
    Err(Error::Internal("vhrun mount: not implemented yet".into()))
}
