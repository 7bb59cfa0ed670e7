//! `imagectl-agent`: configures an instance from its environment on every
//! boot. The command line: `boot`, `render`, `verify`, `--version`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use imagectl_agent::boot::{self, Options, Source};
use imagectl_agent::files::Root;
use imagectl_agent::verify;

const USAGE: &str = "\
usage: imagectl-agent boot [--root DIR] [--params FILE.toml --env ENV] [--deadline SECS]
       imagectl-agent render --params FILE.toml --env ENV [--root DIR]
       imagectl-agent verify [--root DIR]
       imagectl-agent --version

boot    configure this instance: identity and user data from IMDSv2, parameters
        from SSM Parameter Store (or --params/--env, without any network),
        render and write the templates, start the units, wait for health;
        report at /run/imagectl/boot.json
render  render and write the templates from a local parameter file only
verify  check every baked file against the image manifest; list any drift

--root DIR   take every path relative to DIR (default /)
";

/// Parsed command line.
struct Args {
    command: String,
    root: PathBuf,
    params: Option<PathBuf>,
    env: Option<String>,
    deadline: Duration,
    /// `--help` after the command: print the usage and do nothing else.
    help: bool,
}

fn parse(mut argv: impl Iterator<Item = String>) -> Result<Args, String> {
    let command = argv.next().ok_or("missing command")?;
    let mut args = Args {
        command,
        root: PathBuf::from("/"),
        params: None,
        env: None,
        deadline: boot::DEFAULT_DEADLINE,
        help: false,
    };
    while let Some(a) = argv.next() {
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (a.clone(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| argv.next())
                .ok_or(format!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--help" | "-h" => args.help = true,
            "--root" => args.root = PathBuf::from(value()?),
            "--params" => args.params = Some(PathBuf::from(value()?)),
            "--env" => args.env = Some(value()?),
            "--deadline" => {
                let v = value()?;
                let secs: u64 = v
                    .parse()
                    .map_err(|_| format!("--deadline `{v}` is not a number of seconds"))?;
                args.deadline = Duration::from_secs(secs);
            }
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    Ok(args)
}

/// The agent's identity marker (see `imagectl_image::identity`): the digest
/// of the sources this binary was built from, which `imagectl` reads from
/// the file before it bakes it. `--version` prints it, so it is never
/// optimised away.
#[used]
static IDENTITY: [u8; imagectl_agent::identity::MARKER_LEN] = imagectl_agent::identity::marker();

/// The identity this binary carries, read from its marker.
fn identity() -> String {
    // SAFETY: a plain read of an initialised static of bytes; volatile so
    // that the bytes printed are the bytes in the file.
    let marker = unsafe { std::ptr::read_volatile(&IDENTITY) };
    let digits = &marker[marker.len() - 65..marker.len() - 1];
    String::from_utf8_lossy(digits).into_owned()
}

fn main() -> ExitCode {
    let mut argv = std::env::args().skip(1).peekable();
    match argv.peek().map(String::as_str) {
        Some("--version" | "version") => {
            println!(
                "imagectl-agent {} (identity {})",
                env!("CARGO_PKG_VERSION"),
                identity()
            );
            return ExitCode::SUCCESS;
        }
        Some("--help" | "-h" | "help") => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        _ => {}
    }
    let args = match parse(argv) {
        Ok(a) => a,
        Err(e) => return usage(&e),
    };
    if args.help {
        print!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    match args.command.as_str() {
        "boot" | "render" => boot_or_render(args),
        "verify" => verify_image(args),
        other => usage(&format!("unknown command `{other}`")),
    }
}

/// `boot` (configure, start, check health, report) or `render` (only
/// render and write, from a local parameter file).
fn boot_or_render(args: Args) -> ExitCode {
    let render = args.command == "render";
    let source = match (args.params, args.env) {
        (Some(params), Some(env)) => Source::Local { params, env },
        (None, None) if !render => Source::Aws,
        (Some(_), None) => return usage("--params needs --env ENV"),
        (None, Some(_)) => return usage("--env needs --params FILE.toml"),
        (None, None) => return usage("render needs --params FILE.toml --env ENV"),
    };
    let opts = Options {
        root: Root::new(&args.root),
        source,
        deadline: args.deadline,
        start: !render,
        report: !render,
    };
    match boot::run(&opts) {
        Ok(report) => {
            boot::log(&format!(
                "{} ok in {:.1} ms: {} file(s) changed",
                args.command,
                report.total_ms,
                report.changed.len()
            ));
            ExitCode::SUCCESS
        }
        Err(failed) => {
            let (report, err) = *failed;
            boot::log(&format!(
                "error: {} failed at step `{}`: {err}",
                args.command,
                report.failed_step.unwrap_or("?")
            ));
            ExitCode::FAILURE
        }
    }
}

/// `verify`: every baked file against the image manifest.
fn verify_image(args: Args) -> ExitCode {
    if args.params.is_some() || args.env.is_some() {
        return usage("verify takes only --root");
    }
    let root = Root::new(&args.root);
    let config = match boot::load_config(&root) {
        Ok(c) => c,
        Err(e) => {
            boot::log(&format!("error: {e}"));
            return ExitCode::FAILURE;
        }
    };
    match verify::verify(&root, &config.manifest) {
        Ok(drift) if drift.is_empty() => {
            println!("ok: {} file(s) match the manifest", config.manifest.len());
            ExitCode::SUCCESS
        }
        Ok(drift) => {
            for d in &drift {
                println!("changed: {}: {}", d.path, d.what);
            }
            boot::log(&format!(
                "error: {} difference(s) from the image manifest",
                drift.len()
            ));
            ExitCode::FAILURE
        }
        Err(e) => {
            boot::log(&format!("error: {e}"));
            ExitCode::FAILURE
        }
    }
}

fn usage(msg: &str) -> ExitCode {
    eprintln!("imagectl-agent: error: {msg}\n\n{USAGE}");
    ExitCode::from(2)
}
