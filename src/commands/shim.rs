use crate::cli::{InstallShimArgs, RccShimArgs};
use crate::error::{Error, Result};
use crate::paths::absolute;
use crate::shim;

/// `vhrun install-shim DIR`: prints the wrapper's path on stdout, and on
/// stderr what PATH needs when DIR does not come first.
pub fn install(args: &InstallShimArgs) -> Result<i32> {
    let vhrun = match &args.vhrun {
        Some(p) => absolute(p),
        None => std::env::current_exe()
            .and_then(std::fs::canonicalize)
            .map_err(|e| Error::io("/proc/self/exe", e))?,
    };
    let dir = absolute(&args.dir);
    let path = shim::install(&dir, &vhrun)?;
    println!("{}", path.display());
    if crate::logging::quiet() {
        return Ok(0);
    }
    let path_var = std::env::var_os("PATH").unwrap_or_default();
    let first = std::env::split_paths(&path_var)
        .map(|d| d.join("rcc"))
        .find(|p| p.is_file());
    let real = crate::rcc::find_real_rcc(Some(&path_var), Some(&path));
    match first {
        Some(f) if crate::rcc::is_shim(&f) => {}
        _ => eprintln!(
            "vhrun: note: put {} first on PATH (export PATH=\"{}:$PATH\") so that `rcc` finds the wrapper",
            dir.display(),
            dir.display()
        ),
    }
    match real {
        Some(r) => eprintln!("vhrun: other rcc commands go to {}", r.display()),
        None => eprintln!(
            "vhrun: note: no real rcc on PATH: only `rcc run --virtual` / `rcc task run --virtual` will work"
        ),
    }
    Ok(0)
}

pub fn dispatch(args: &RccShimArgs) -> Result<i32> {
    let switches = super::switches::Switches::from_env();
    shim::dispatch(&args.shim, &args.args, switches.rcc.as_deref())
}
