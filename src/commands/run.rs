use crate::cli::RunArgs;
use crate::error::Result;

pub fn run(args: &RunArgs) -> Result<i32> {
    crate::run::run(args)
}
