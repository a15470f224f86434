// vhrun starts without std's runtime setup (`lang_start`): that setup
// reads /proc/self/maps to place a guard page and installs a SIGSEGV
// handler on an alternate stack, a dozen system calls and some faults
// that were 3% of an activation (`vhrun exec -- true` over an image,
// interleaved pairs). What vhrun needs of it is in `sys::startup`.
#![cfg_attr(not(test), no_main)]
#![deny(unsafe_code)]

#[global_allocator]
static ALLOC: vhrun::sys::arena::Arena = vhrun::sys::arena::Arena::new();

/// The process's C `main` (the C library's start calls it), in place of std's.
#[cfg(not(test))]
#[allow(unsafe_code)] // `no_mangle` names the symbol the C start calls; argv is read once.
#[no_mangle]
extern "C" fn main(argc: std::ffi::c_int, argv: *const *const std::ffi::c_char) -> std::ffi::c_int {
    // SAFETY: argc and argv are what the C start passes to main.
    unsafe { vhrun::sys::startup::as_std_does(argc, argv) };
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
