// vhrun starts without std's runtime setup (`lang_start`): that setup
// reads /proc/self/maps to place a guard page and installs a SIGSEGV
// handler on an alternate stack, a dozen system calls and some faults
// that were 3% of an activation (`vhrun exec -- true` over an image,
// interleaved pairs). What vhrun needs of it is in `sys::startup`.
#![cfg_attr(not(test), no_main)]
#![deny(unsafe_code)]

/// The process's C `main` (glibc's start calls it), in place of std's.
#[cfg(not(test))]
#[allow(unsafe_code)] // `no_mangle` names the symbol glibc calls; no unsafe code.
#[no_mangle]
extern "C" fn main(
    _argc: std::ffi::c_int,
    _argv: *const *const std::ffi::c_char,
) -> std::ffi::c_int {
    vhrun::sys::startup::as_std_does();
    // A panic must not unwind out of a C function (that aborts): exit
    // with 101 after its message, as std's start does.
    let code = std::panic::catch_unwind(run).unwrap_or(101);
    std::process::exit(code);
}

#[cfg_attr(test, allow(dead_code))]
fn run() -> i32 {
    vhrun::runstats::mark_start();
    let cli = vhrun::cli::parse();
    vhrun::logging::init(cli.global.verbose, cli.global.quiet);
    match vhrun::commands::dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("vhrun: {e}");
            e.exit_code()
        }
    }
}
