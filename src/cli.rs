//! The command line as typed: clap's types, parsed once, validated into a
//! [`crate::Config`] by [`crate::cmd::run`].

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
    /// Render the role's boot templates as the agent would, from a local parameter file.
    Preview(PreviewArgs),
    /// Pin base images in `images/bases.lock`.
    #[command(subcommand)]
    Bases(BasesCommand),
    /// Bake an AMI for each role whose content hash has no image yet.
    Build(BuildArgs),
    /// Build the role locally if needed, boot it (systemd-nspawn, or QEMU
    /// with `--vm`) and check it.
    Test(TestArgs),
    /// Point a channel at an image (default: the image of the role's current hash).
    Publish(PublishArgs),
    /// Copy exactly what one channel points to into another; never rebuilds.
    Promote(PromoteArgs),
    /// Point a channel back to an earlier value from its own history.
    Rollback(RollbackArgs),
    /// Replace the instances of the Auto Scaling groups a channel feeds
    /// (an instance refresh per group), or show the last refreshes.
    Rollout(RolloutArgs),
    /// List imagectl images and what references them.
    Images(ImagesArgs),
    /// Print the SBOM (SPDX 2.3 JSON) of a role's image: its Debian
    /// packages, baked files and release archives, named by content hash.
    Sbom(SbomArgs),
    /// What differs between two images of a role: packages, baked files,
    /// boot templates, release archives, and the inputs that changed.
    Diff(DiffArgs),
    /// Check an image against its signed provenance: the signature, that
    /// the statement names this image, its tags and its SBOM.
    Verify(VerifyArgs),
    /// Delete all but the newest images of each role, never one still referenced.
    Prune(PruneArgs),
    /// Remove what builds that died left behind, found by imagectl's tags and names.
    Sweep(SweepArgs),
    /// Print the least-privilege IAM policy (JSON) of a job.
    IamPolicy(IamPolicyArgs),
    /// Check that what builds and publications need exists in AWS: one
    /// line per resource and region, each problem with its fix.
    Doctor,
    /// Print the JSON Schema of role files, for editors.
    Schema,
    /// Print shell completions.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff).
    Man,
    /// Serve one guest connection to the instance metadata service of
    /// `imagectl test --vm` on stdin and stdout (QEMU starts it).
    #[command(hide = true)]
    ImdsServe {
        /// The directory of the answers and the request log.
        dir: PathBuf,
    },
}

impl Command {
    /// Whether the command writes files or changes AWS when it succeeds: its
    /// refusals of bad input then say that nothing was written.
    pub fn writes(&self) -> bool {
        matches!(
            self,
            Command::Render(_)
                | Command::Stage(_)
                | Command::Preview(_)
                | Command::Bases(_)
                | Command::Build(_)
                | Command::Test(_)
                | Command::Publish(_)
                | Command::Promote(_)
                | Command::Rollback(_)
                | Command::Rollout(RolloutArgs { command: None, .. })
                | Command::Prune(_)
                | Command::Sweep(_)
        )
    }
}

/// `imagectl iam-policy`.
#[derive(Debug, clap::Args)]
pub struct IamPolicyArgs {
    /// The job.
    #[arg(value_enum)]
    pub job: crate::iam::Job,
    /// With `instance`: the role whose instances the profile is for.
    pub role: Option<String>,
    /// With `instance`: only this environment's configuration (the `env`
    /// of the launch template's user data). Default: every environment.
    #[arg(long, value_name = "ENV")]
    pub env: Option<String>,
    /// With `publish`: only these channels may be written (repeatable; the
    /// main branch's role publishes to `dev` only). Default: every channel.
    #[arg(long = "channel", value_name = "CHANNEL")]
    pub channels: Vec<String>,
}

/// `imagectl images`.
#[derive(Debug, clap::Args)]
pub struct ImagesArgs {
    /// Only these roles.
    pub roles: Vec<String>,
}

/// `imagectl prune`.
#[derive(Debug, clap::Args)]
pub struct PruneArgs {
    /// Only these roles (default: every role with images).
    pub roles: Vec<String>,
    /// How many of the newest images of each role to keep, referenced or
    /// not (an image still referenced is kept whatever its age).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..))]
    pub keep: u16,
    /// Print the plan, with the reason each image is kept; delete nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// `imagectl sweep`.
#[derive(Debug, clap::Args)]
pub struct SweepArgs {
    /// Only what is at least this old (`90s`, `30m`, `2h`, `1d12h`): a
    /// build still running is younger than this.
    #[arg(long, value_name = "AGE", default_value = "2h", value_parser = parse_age)]
    pub older_than: std::time::Duration,
    /// Print what would be removed; remove nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Break-glass: only the images (and their snapshots) that a build was
    /// killed before it could tag, found by their names. Needs the
    /// `sweep-untagged` policy, which cannot be limited to imagectl's images.
    #[arg(long)]
    pub untagged: bool,
}

/// An age such as `2h`, `90s` or `1d12h`: whole numbers, each followed by
/// `s`, `m`, `h` or `d`; `0` alone is none.
pub fn parse_age(s: &str) -> Result<std::time::Duration, String> {
    if s == "0" {
        return Ok(std::time::Duration::ZERO);
    }
    let bad = || format!("`{s}` is not an age such as `30m`, `2h` or `1d12h`");
    let mut secs: u64 = 0;
    let mut digits = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86400,
            _ => return Err(bad()),
        };
        let n: u64 = digits.parse().map_err(|_| bad())?;
        secs = n
            .checked_mul(unit)
            .and_then(|v| secs.checked_add(v))
            .ok_or_else(bad)?;
        digits.clear();
    }
    if !digits.is_empty() || s.is_empty() {
        return Err(bad());
    }
    Ok(std::time::Duration::from_secs(secs))
}

/// `imagectl publish`.
#[derive(Debug, clap::Args)]
pub struct PublishArgs {
    /// The role.
    pub role: String,
    /// The channel (one of `[publish] channels`).
    #[arg(long)]
    pub channel: String,
    /// The AMI in the home region (its copies are found by their tags).
    #[arg(long, value_name = "ID")]
    pub ami: Option<String>,
    /// Publish even an image older than the one the channel holds.
    #[arg(long)]
    pub allow_older: bool,
    /// Publish even an image that does not verify against its signed
    /// provenance (`imagectl verify`), saying so.
    #[arg(long)]
    pub allow_unverified: bool,
    /// Then start an instance refresh on each Auto Scaling group of the
    /// channel (`[publish.auto_scaling_groups]`) and follow it to its end.
    #[arg(long)]
    pub roll: bool,
    /// Skip the preflight (the checks of `imagectl doctor` this needs).
    #[arg(long)]
    pub no_preflight: bool,
}

/// `imagectl promote`.
#[derive(Debug, clap::Args)]
pub struct PromoteArgs {
    /// The role.
    pub role: String,
    /// The channel to copy from.
    #[arg(long)]
    pub from: String,
    /// The channel to copy to.
    #[arg(long)]
    pub to: String,
    /// Promote even an image older than the one the target channel holds.
    #[arg(long)]
    pub allow_older: bool,
    /// Publish even an image that does not verify against its signed
    /// provenance (`imagectl verify`), saying so.
    #[arg(long)]
    pub allow_unverified: bool,
    /// Then start an instance refresh on each Auto Scaling group of the
    /// channel (`[publish.auto_scaling_groups]`) and follow it to its end.
    #[arg(long)]
    pub roll: bool,
    /// Skip the preflight (the checks of `imagectl doctor` this needs).
    #[arg(long)]
    pub no_preflight: bool,
}

/// `imagectl rollout`: `ROLE --channel C`, or `status ROLE`.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct RolloutArgs {
    /// `status`: show the last refresh of each group.
    #[command(subcommand)]
    pub command: Option<RolloutCommand>,
    /// The role.
    #[arg(required = true)]
    pub role: Option<String>,
    /// The channel whose groups are refreshed, to the image it holds.
    #[arg(long, required = true)]
    pub channel: Option<String>,
}

/// `imagectl rollout status`.
#[derive(Debug, Subcommand)]
pub enum RolloutCommand {
    /// Show the last instance refresh of each Auto Scaling group of a role.
    Status {
        /// The role.
        role: String,
        /// Only the groups of this channel.
        #[arg(long)]
        channel: Option<String>,
    },
}

/// `imagectl rollback`.
#[derive(Debug, clap::Args)]
pub struct RollbackArgs {
    /// The role.
    pub role: String,
    /// The channel.
    #[arg(long)]
    pub channel: String,
    /// How many values back.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    pub steps: u16,
    /// Publish even an image that does not verify against its signed
    /// provenance (`imagectl verify`), saying so.
    #[arg(long)]
    pub allow_unverified: bool,
}

/// `imagectl build`.
#[derive(Debug, clap::Args)]
pub struct BuildArgs {
    /// Roles to build.
    #[arg(required_unless_present_any = ["all", "changed"], conflicts_with_all = ["all", "changed"])]
    pub roles: Vec<String>,
    /// Every role that is not abstract.
    #[arg(long, conflicts_with = "changed")]
    pub all: bool,
    /// Only the roles whose content hash has no image yet.
    #[arg(long)]
    pub changed: bool,
    /// Build even when an image with the same hash exists.
    #[arg(long)]
    pub force: bool,
    /// Say what would be built or reused; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// How many roles to build at the same time.
    #[arg(long, short = 'j', default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=32))]
    pub jobs: u16,
    /// Publish every image built or reused to this channel afterwards.
    #[arg(long, value_name = "CHANNEL", conflicts_with = "target")]
    pub publish: Option<String>,
    /// The imagectl-agent binary to bake (default: the build of this
    /// checkout beside this binary, the `release-agent` one first).
    #[arg(long, value_name = "PATH", env = "IMAGECTL_AGENT_BIN")]
    pub agent: Option<PathBuf>,
    /// Where the image goes.
    #[arg(long, value_enum, default_value_t = BuildTarget::Aws)]
    pub target: BuildTarget,
    /// How AMIs are made, for every role built (default: each role's
    /// `[image] method`, else packer). The method enters the content hash.
    #[arg(long, value_enum)]
    pub method: Option<BuildMethod>,
    /// With `--target local`: `oci` also writes an OCI image archive
    /// (`podman load`/`docker load`) next to the tarball.
    #[arg(long, value_enum, default_value_t = LocalFormat::Tar)]
    pub format: LocalFormat,
    /// Skip the preflight (the checks of `imagectl doctor` a bake and the
    /// `--publish` channel need), run before anything is baked.
    #[arg(long)]
    pub no_preflight: bool,
}

/// Where `imagectl build` puts an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BuildTarget {
    /// An AMI in every region, baked with Packer.
    Aws,
    /// A root filesystem tarball in images/local/, built with mmdebstrap.
    Local,
    /// A bootable GPT disk image in images/local/ (the same root filesystem
    /// with a kernel and systemd-boot): what `test --vm` boots and
    /// `--method disk` uploads.
    Disk,
}

/// How `--target aws` makes an AMI (default: the role's `[image] method`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BuildMethod {
    /// A build instance from the base AMI, provisioned by Packer.
    Packer,
    /// The disk image of `--target disk`, uploaded with the EBS direct APIs
    /// and registered: no build instance.
    Disk,
}

/// What `--target local` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LocalFormat {
    /// The root filesystem tarball.
    Tar,
    /// The tarball and an OCI image archive.
    Oci,
}

/// `imagectl test`.
#[derive(Debug, clap::Args)]
pub struct TestArgs {
    /// The role.
    pub role: String,
    /// Parameters, shaped like the SSM tree below the role's path (default:
    /// roles/params/ROLE.toml).
    #[arg(long, value_name = "FILE.toml")]
    pub params: Option<PathBuf>,
    /// The environment the agent renders for.
    #[arg(long, default_value = "dev")]
    pub env: String,
    /// Time limit of the whole boot, seconds.
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
    /// Keep the booted root filesystem (its journal is in var/log/journal);
    /// with `--vm`, the booted copy of the disk and the console log.
    #[arg(long)]
    pub keep: bool,
    /// Boot the role's disk image (`build --target disk`) in QEMU, with its
    /// own boot loader and kernel, the agent reading an instance metadata
    /// service as on EC2.
    #[arg(long)]
    pub vm: bool,
    /// The imagectl-agent binary to bake (default: the build of this
    /// checkout beside this binary, the `release-agent` one first).
    #[arg(long, value_name = "PATH", env = "IMAGECTL_AGENT_BIN")]
    pub agent: Option<PathBuf>,
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

/// `imagectl preview`.
#[derive(Debug, clap::Args)]
pub struct PreviewArgs {
    /// The role.
    pub role: String,
    /// Parameters shaped like the SSM tree (default: `roles/params/ROLE.toml`).
    #[arg(long, value_name = "FILE.toml")]
    pub params: Option<PathBuf>,
    /// The environment the templates see as `env`.
    #[arg(long, default_value = "dev", value_name = "ENV")]
    pub env: String,
    /// Directory to write (`context/`, `root/`); must not exist yet, or be
    /// empty (default: a new directory under the temporary directory).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// The imagectl-agent binary that renders (default: the one `build`
    /// would bake).
    #[arg(long, value_name = "PATH", env = "IMAGECTL_AGENT_BIN")]
    pub agent: Option<PathBuf>,
}

/// `imagectl stage`.
#[derive(Debug, clap::Args)]
pub struct StageArgs {
    /// The role.
    pub role: String,
    /// Directory to write; must not exist yet, or be empty.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// The imagectl-agent binary to bake (default: the build of this
    /// checkout beside this binary, the `release-agent` one first).
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
    /// Every role that is not abstract (the default when no role is named).
    #[arg(long, conflicts_with = "roles")]
    pub all: bool,
    /// Exit 0 when nothing needs building, 2 when something does, 1 on error.
    #[arg(long)]
    pub detailed_exitcode: bool,
    /// Print the plan in another shape.
    #[arg(long, value_enum)]
    pub format: Option<PlanFormat>,
    /// Roles (default: every role that is not abstract).
    pub roles: Vec<String>,
}

/// Other shapes of a plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PlanFormat {
    /// The roles to build, as GitHub Actions' `strategy.matrix`.
    GithubMatrix,
}

/// `imagectl sbom`.
#[derive(Debug, clap::Args)]
pub struct SbomArgs {
    /// The role.
    pub role: String,
    /// Which image: the AMIs' (packages as the role declares them), or the
    /// local tarball's or disk image's root filesystem (every installed
    /// package).
    #[arg(long, value_enum, default_value_t = BuildTarget::Aws)]
    pub target: BuildTarget,
    /// The build of this content hash; a prefix will do (default: the
    /// role's current hash).
    #[arg(long, value_name = "HASH")]
    pub hash: Option<String>,
}

/// `imagectl verify`.
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// What to verify: an AMI ID (in the home region, or `--region`), a
    /// role (with `--channel`: the images the channel holds in every
    /// region), or the path of a local tarball.
    pub image: String,
    /// The channel whose images to verify, when IMAGE is a role.
    #[arg(long)]
    pub channel: Option<String>,
    /// The region of an AMI ID (default: the home region).
    #[arg(long)]
    pub region: Option<String>,
}

/// `imagectl diff`.
#[derive(Debug, clap::Args)]
pub struct DiffArgs {
    /// The role.
    pub role: String,
    /// The first image: a content hash (a prefix will do), the path of a
    /// local tarball or of an SBOM, an AMI ID, or a channel.
    pub from: String,
    /// The second image, named the same ways.
    pub to: String,
    /// Which builds a content hash names.
    #[arg(long, value_enum, default_value_t = BuildTarget::Aws)]
    pub target: BuildTarget,
    /// Exit 1 when the images differ (as `git diff --exit-code` does), 0
    /// when they hold the same; without it, 0 either way.
    #[arg(long)]
    pub exit_code: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages() {
        for (s, secs) in [
            ("0", 0),
            ("0s", 0),
            ("90s", 90),
            ("30m", 1800),
            ("2h", 7200),
            ("1d12h", 129_600),
        ] {
            assert_eq!(
                parse_age(s),
                Ok(std::time::Duration::from_secs(secs)),
                "{s}"
            );
        }
        for bad in [
            "",
            "2",
            "h",
            "2x",
            "-1h",
            "2h30",
            "1.5h",
            "99999999999999999999d",
        ] {
            assert!(parse_age(bad).is_err(), "{bad}");
        }
    }
}
