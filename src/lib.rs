//! imagectl turns role definitions into immutable machine images.
//!
//! The pure part of the pipeline (settings, roles, the base lock, Packer
//! templates, the content hash, the staged context) is the
//! [`imagectl_core`] crate; its data flows one way, from a role file to a
//! resolved [`imagectl_core::target::Target`]. This crate takes targets from
//! there, in layers that only point down:
//!
//! - [`aws`]: thin calls to EC2 and SSM, with retries and readable errors;
//! - [`bases`], [`inputs`]: the lock resolved against EC2, the inputs of
//!   each build recorded beside its channels;
//! - [`build`] (AMIs with Packer, through [`packer_exec`]) and [`local`]
//!   (root filesystems with mmdebstrap, booted with systemd-nspawn beside
//!   [`sidecar`]s): artifacts;
//! - [`publish`], [`plan`], [`gc`], [`sweep`]: channels and launch
//!   templates, what needs building, what can go;
//! - [`preflight`]: whether what a build or a publication needs exists in
//!   AWS, checked before it starts (and by `imagectl doctor`);
//! - [`cmd`]: one module per subcommand, which nothing else imports.

pub mod artifacts;
pub mod aws;
pub mod bases;
pub mod build;
pub mod cli;
pub mod cmd;
pub mod failpoint;
pub mod gc;
pub mod iam;
pub mod inputs;
pub mod local;
pub mod packer_exec;
pub mod plan;
pub mod preflight;
pub mod progress;
pub mod provenance;
pub mod publish;
pub mod rollout;
pub mod sidecar;
pub mod summary;
pub mod sweep;

use std::path::PathBuf;

use imagectl_core::diag::Diagnostics;
use imagectl_core::project::{self, Project};
use imagectl_core::{agent, lock, stage, target};

use cli::{Args, OutputFormat};

/// Everything that can go wrong, sorted by what the user should do: fix the
/// input (exit 2) or look at what failed (exit 1). Which of the two an
/// error of a layer is, the layer's error type says (`is_usage`).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Role files or settings are invalid: every problem, with locations.
    #[error(transparent)]
    Invalid(#[from] Diagnostics),
    /// The command line asks for something that cannot be done.
    #[error("{0}")]
    Usage(String),
    /// An error of one of imagectl's layers.
    #[error("{}", imagectl_image::error_chain(&**source))]
    Layer {
        /// Whether the user fixes it (exit 2) or it failed (exit 1).
        usage: bool,
        /// The error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
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
            Error::Layer { usage, .. } => {
                if *usage {
                    2
                } else {
                    1
                }
            }
            Error::Failed(_) => 1,
            Error::Exit(code) => *code,
            Error::Interrupted(_, code) => *code,
        }
    }

    /// The full message for stderr, each line starting with `error:` where
    /// it does not already; `writes` is whether the command would have
    /// written anything (see `Command::writes`).
    pub fn report(&self, writes: bool) -> String {
        match self {
            // The refusal comes before anything is written: a command that
            // writes says so, one that never writes has nothing to say.
            Error::Invalid(d) if writes => format!("{d}; nothing was written"),
            Error::Invalid(d) => d.to_string(),
            Error::Failed(e) => format!("error: {}", imagectl_image::error_chain(&**e)),
            Error::Exit(_) => String::new(),
            other => format!("error: {other}"),
        }
    }

    fn layer(usage: bool, e: impl std::error::Error + Send + Sync + 'static) -> Error {
        Error::Layer {
            usage,
            source: Box::new(e),
        }
    }
}

/// Errors of the layers below, each telling whether it is the user's to fix.
macro_rules! layer_errors {
    ($($t:ty),* $(,)?) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Error {
                Error::layer(e.is_usage(), e)
            }
        }
    )*};
}

layer_errors!(
    agent::Error,
    lock::Error,
    stage::Error,
    bases::Error,
    build::Error,
    local::Error,
    publish::Error,
    preflight::Error,
    rollout::Error,
    provenance::Error,
);

impl From<project::Error> for Error {
    fn from(e: project::Error) -> Error {
        match e {
            project::Error::Invalid(d) => Error::Invalid(d),
            e => Error::layer(e.is_usage(), e),
        }
    }
}

impl From<target::Error> for Error {
    fn from(e: target::Error) -> Error {
        match e {
            target::Error::Invalid(d) => Error::Invalid(d),
            e => Error::layer(e.is_usage(), e),
        }
    }
}

impl From<aws::Error> for Error {
    fn from(e: aws::Error) -> Error {
        Error::layer(false, e)
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
