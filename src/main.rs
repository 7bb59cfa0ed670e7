//! The `imagectl` command: parse, set up logging, run, report.

use std::io::IsTerminal;

use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() {
    // Die quietly on a closed pipe (`imagectl images | head`), as Unix tools
    // do, instead of failing to print.
    // SAFETY: setting a signal's disposition to its default before any
    // thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let args = imagectl::cli::Args::parse();
    // imagectl's own logs at info, everyone else's (the AWS SDK is chatty) at
    // warn; -v and -q move both, RUST_LOG overrides everything.
    let default = match (args.quiet, args.verbose) {
        (true, _) => "error",
        (false, 0) => "warn,imagectl=info",
        (false, 1) => "warn,imagectl=debug",
        (false, _) => "info,imagectl=trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .without_time()
        .init();
    if let Err(e) = imagectl::cmd::run(&args) {
        let report = e.report();
        if !report.is_empty() {
            eprintln!("{report}");
        }
        std::process::exit(e.exit_code());
    }
}
