use crate::cli::CatalogsArgs;
use crate::error::{Error, Result};

pub fn run(_args: &CatalogsArgs) -> Result<i32> {
    Err(Error::Internal(
        "vhrun catalogs: not implemented yet".into(),
    ))
}
