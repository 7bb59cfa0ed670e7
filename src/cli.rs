//! The command line as typed: clap's types, parsed once, validated into a
//! [`crate::Config`] by [`crate::run`].

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// Turns role definitions into immutable machine images.
#[derive(Debug, Parser)]
#[command(name = "imagectl", version, about, long_about = None)]
pub struct Args {
    /// Run as if started in DIR (the project is found by walking up from it).
    #[arg(short = 'C', value_name = "DIR", global = true)]
    pub dir: Option<PathBuf>,
    /// How results on stdout are written.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text, global = true)]
    pub output: OutputFormat,
    /// More log output on stderr (repeat for more).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Only errors on stderr.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// A compact table for people.
    Text,
    /// One JSON document, for machines.
    Json,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check role files and `imagectl.toml`; report every problem.
    Validate(RolesArgs),
    /// Print a role's content hash.
    Hash(RoleArg),
    /// List everything that enters a role's image, with digests.
    Inputs(RoleArg),
    /// Show which roles need building.
    Plan(PlanArgs),
    /// Write the Packer template of each role to `images/ROLE.pkr.hcl`.
    Render(RenderArgs),
    /// Write the staged build context of a role: exactly what goes into the image.
    Stage(StageArgs),
    /// Pin base images in `images/bases.lock`.
    #[command(subcommand)]
    Bases(BasesCommand),
}

/// `imagectl render`.
#[derive(Debug, clap::Args)]
pub struct RenderArgs {
    /// Write nothing; exit 1 naming every template that is stale.
    #[arg(long, conflicts_with = "out")]
    pub check: bool,
    /// Write the templates to DIR instead of `images/`.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Leave out what Debian's Packer 1.6.6 rejects (needs `--out`: the
    /// committed templates are for current Packer).
    #[arg(long, requires = "out")]
    pub packer_1_6: bool,
    /// Roles (default: every role that is not abstract).
    pub roles: Vec<String>,
}

/// `imagectl stage`.
#[derive(Debug, clap::Args)]
pub struct StageArgs {
    /// The role.
    pub role: String,
    /// Directory to write; must not exist yet, or be empty.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// The imagectl-agent binary to bake (default: `imagectl-agent` next to
    /// this binary, or `IMAGECTL_AGENT_BIN`).
    #[arg(long, value_name = "PATH", env = "IMAGECTL_AGENT_BIN")]
    pub agent: Option<PathBuf>,
}

/// `imagectl bases ...`.
#[derive(Debug, Subcommand)]
pub enum BasesCommand {
    /// Resolve every `[bases]` entry to the newest matching AMI per region.
    Update(BasesUpdateArgs),
}

/// `imagectl bases update`.
#[derive(Debug, clap::Args)]
pub struct BasesUpdateArgs {
    /// Write nothing; exit 1 when newer base images exist.
    #[arg(long)]
    pub check: bool,
}

/// Zero or more roles; none means all.
#[derive(Debug, clap::Args)]
pub struct RolesArgs {
    /// Roles (default: every role in `roles/`).
    pub roles: Vec<String>,
}

/// Exactly one role.
#[derive(Debug, clap::Args)]
pub struct RoleArg {
    /// The role (a file `roles/ROLE.toml`).
    pub role: String,
}

/// `imagectl plan`.
#[derive(Debug, clap::Args)]
pub struct PlanArgs {
    /// Compare with the local build record instead of AWS.
    #[arg(long)]
    pub offline: bool,
    /// Roles (default: every role that is not abstract).
    pub roles: Vec<String>,
}
