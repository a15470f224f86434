#![forbid(unsafe_code)]

use clap::Parser;

fn main() {
    vhrun::runstats::mark_start();
    let cli = vhrun::cli::Cli::parse();
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
