//! The `imagectl` command: parse, set up logging, run, report.

use std::io::IsTerminal;

use clap::Parser;
use tracing_subscriber::EnvFilter;

/// The AWS SDK's crates, at error unless -vv or RUST_LOG asks for more.
const QUIET_SDK: &str = "aws_config=error,aws_runtime=error,aws_smithy_runtime=error,\
    aws_smithy_http_client=error,aws_sdk_ec2=error,aws_sdk_ssm=error,aws_sdk_sts=error,\
    aws_sdk_sso=error,aws_sdk_ssooidc=error,hyper=error,hyper_util=error";

fn main() {
    // Die quietly on a closed pipe (`imagectl images | head`), as Unix tools
    // do, instead of failing to print.
    // SAFETY: setting a signal's disposition to its default before any
    // thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let args = imagectl::cli::Args::parse();
    // imagectl's own logs at info, everyone else's at warn; -v and -q move
    // both, RUST_LOG overrides everything. The AWS SDK's crates stay at
    // error below -vv: their warnings (a credential provider that failed,
    // with its Debug dump) repeat what imagectl's error says in words.
    let default = match (args.quiet, args.verbose) {
        (true, _) => "error".to_string(),
        (false, 0) => format!("warn,imagectl=info,{QUIET_SDK}"),
        (false, 1) => format!("warn,imagectl=debug,{QUIET_SDK}"),
        (false, _) => "info,imagectl=trace".to_string(),
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .without_time()
        .init();
    if let Err(e) = imagectl::cmd::run(&args) {
        let report = e.report(args.command.writes());
        if !report.is_empty() {
            eprintln!("{report}");
        }
        std::process::exit(e.exit_code());
    }
}
