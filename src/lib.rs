//! imagectl turns role definitions into immutable machine images.
//!
//! A role is a TOML file in `roles/` saying what goes into an image:
//!
//! ```toml
//! description = "Background job workers"
//! extends = ["base"]
//!
//! [image]
//! base = "debian-12"            # a key of [bases] in imagectl.toml
//! instance_type = "t3.medium"
//!
//! [packages]
//! apt = ["ruby", "libpq5"]
//!
//! [[files]]
//! source = "files/worker/sidekiq.service"
//! dest = "/etc/systemd/system/sidekiq.service"
//!
//! [[services]]
//! name = "sidekiq.service"
//! enabled = false               # started by the agent once config is rendered
//!
//! [boot]
//! parameters = "/learn/{{env}}/worker"
//! start = ["sidekiq.service"]
//! ```
//!
//! Data flows one way: role file → validated [`role::Role`] → content hash
//! ([`hash`]) → staged context → template → build → artifact → publication.

pub mod aws;
pub mod build;
pub mod cli;
pub mod cmd;
pub mod diag;
pub mod fsutil;
pub mod gc;
pub mod hash;
pub mod hcl;
pub mod iam;
pub mod local;
pub mod lock;
pub mod packer;
pub mod packer_exec;
pub mod progress;
pub mod project;
pub mod publish;
pub mod record;
pub mod role;
pub mod sidecar;
pub mod stage;
pub mod summary;
pub mod sweep;
pub mod tomlfile;

use std::path::PathBuf;

use cli::{Args, Command, OutputFormat};
use diag::Diagnostics;
use project::Project;

/// Everything that can go wrong, sorted by what the user should do: fix the
/// input (exit 2) or look at what failed (exit 1).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Role files or settings are invalid: every problem, with locations.
    #[error(transparent)]
    Invalid(#[from] Diagnostics),
    /// The project could not be found or read.
    #[error(transparent)]
    Project(#[from] project::Error),
    /// The command line asks for something that cannot be done.
    #[error("{0}")]
    Usage(String),
    /// Something failed while doing the work.
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
    /// The outcome is already reported on stdout (a check found
    /// differences, a plan has work): exit with this code, print nothing more.
    #[error("")]
    Exit(i32),
    /// A signal stopped the work after cleanup: exit 128 + the signal.
    #[error("{0}")]
    Interrupted(String, i32),
}

impl Error {
    /// The process exit code: 2 for bad input or usage, 1 for failures.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Invalid(_) | Error::Usage(_) => 2,
            Error::Project(e) => match e {
                project::Error::Read { .. } => 1,
                _ => 2,
            },
            Error::Failed(_) => 1,
            Error::Exit(code) => *code,
            Error::Interrupted(_, code) => *code,
        }
    }

    /// The full message for stderr, each line starting with `error:` where
    /// it does not already.
    pub fn report(&self) -> String {
        match self {
            Error::Invalid(d) | Error::Project(project::Error::Invalid(d)) => d.to_string(),
            Error::Failed(e) => format!("error: {e:#}"),
            Error::Exit(_) => String::new(),
            other => format!("error: {other}"),
        }
    }
}

/// The resolved configuration of one run: the command line once checked.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where to start looking for the project.
    pub dir: PathBuf,
    /// How to print results.
    pub output: OutputFormat,
    /// Only errors on stderr.
    pub quiet: bool,
}

impl Config {
    /// Resolves the raw arguments.
    pub fn from_args(args: &Args) -> Config {
        Config {
            dir: args.dir.clone().unwrap_or_else(|| PathBuf::from(".")),
            output: args.output,
            quiet: args.quiet,
        }
    }

    /// Finds and reads the project.
    pub fn project(&self) -> Result<Project, Error> {
        Ok(Project::discover(&self.dir)?)
    }
}

/// Runs one command.
pub fn run(args: &Args) -> Result<(), Error> {
    let config = Config::from_args(args);
    match &args.command {
        Command::Validate(a) => cmd::validate::run(&config, a),
        Command::Hash(a) => cmd::hash::run(&config, a),
        Command::Inputs(a) => cmd::inputs::run(&config, a),
        Command::Plan(a) => cmd::plan::run(&config, a),
        Command::Render(a) => cmd::render::run(&config, a),
        Command::Stage(a) => cmd::stage::run(&config, a),
        Command::Bases(cli::BasesCommand::Update(a)) => cmd::bases::update(&config, a),
        Command::Build(a) => cmd::build::run(&config, a),
        Command::Test(a) => cmd::test::run(&config, a),
        Command::Publish(a) => cmd::publish::publish(&config, a),
        Command::Promote(a) => cmd::publish::promote(&config, a),
        Command::Rollback(a) => cmd::publish::rollback(&config, a),
        Command::Images(a) => cmd::images::images(&config, a),
        Command::Prune(a) => cmd::images::prune(&config, a),
        Command::Sweep(a) => cmd::sweep::run(&config, a),
        Command::Schema => {
            print_json(&role::schema());
            Ok(())
        }
        Command::Completions { shell } => {
            let mut cmd = <Args as clap::CommandFactory>::command();
            clap_complete::generate(*shell, &mut cmd, "imagectl", &mut std::io::stdout());
            Ok(())
        }
        Command::Man => {
            let cmd = <Args as clap::CommandFactory>::command();
            clap_mangen::Man::new(cmd)
                .render(&mut std::io::stdout())
                .map_err(|e| Error::Failed(e.into()))
        }
        Command::IamPolicy(a) => {
            let project = config.project()?;
            let policy = iam::policy(&project, &a.job)
                .ok_or_else(|| Error::Usage(format!("unknown job `{}`", a.job)))?;
            print_json(&policy);
            Ok(())
        }
    }
}

/// The named roles (every concrete role when none is named), each with its
/// content hash, and the lock they were hashed with.
pub fn load_targets(
    project: &Project,
    names: &[String],
) -> Result<(lock::Lock, Vec<build::Target>), Error> {
    let roles = if names.is_empty() {
        role::load_all(project)?
            .into_iter()
            .filter(|r| !r.is_abstract)
            .collect()
    } else {
        role::load(project, names)?
    };
    let lock = lock::Lock::load(project).map_err(lock_error)?;
    let mut targets = Vec::new();
    for r in roles {
        let h = hash::compute(project, &lock, &r).map_err(hash_error)?;
        targets.push(build::Target { role: r, hash: h });
    }
    Ok((lock, targets))
}

/// Loads one role and computes its hash.
pub fn content_hash(project: &Project, name: &str) -> Result<hash::ContentHash, Error> {
    let roles = role::load(project, &[name.to_string()])?;
    let role = roles
        .first()
        .ok_or_else(|| Error::Usage(format!("unknown role `{name}`")))?;
    let lock = lock::Lock::load(project).map_err(lock_error)?;
    hash::compute(project, &lock, role).map_err(hash_error)
}

/// An abstract role, a missing setting or a missing pin is something the
/// user fixes (exit 2); an unreadable file is a failure.
pub fn hash_error(e: hash::Error) -> Error {
    match e {
        hash::Error::Read { .. } => Error::Failed(e.into()),
        hash::Error::Lock(l) => lock_error(l),
        other => Error::Usage(other.to_string()),
    }
}

/// Lock problems the user fixes by running a command are usage errors;
/// failed AWS calls and writes are failures.
pub fn lock_error(e: lock::Error) -> Error {
    match e {
        lock::Error::Aws(_) | lock::Error::Write(_) => Error::Failed(e.into()),
        other => Error::Usage(other.to_string()),
    }
}

/// Prints one JSON document on stdout.
pub fn print_json<T: serde::Serialize>(value: &T) {
    match serde_json::to_string_pretty(value) {
        Ok(s) => println!("{s}"),
        Err(e) => tracing::error!("cannot encode output as JSON: {e}"),
    }
}
