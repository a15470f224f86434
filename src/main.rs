#![forbid(unsafe_code)]

fn main() {
    vhrun::runstats::mark_start();
    let cli = vhrun::cli::parse();
    vhrun::logging::init(cli.global.verbose, cli.global.quiet);
    let code = match vhrun::commands::dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("vhrun: {e}");
            e.exit_code()
        }
    };
    std::process::exit(code);
}
