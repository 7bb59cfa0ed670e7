//! The command layer: one module per subcommand, each with `run(&Config,
//! &Args)` (or one function per verb), parsing nothing and printing results.
//! Nothing below this layer imports from it.

pub mod bases;
pub mod build;
pub mod diff;
pub mod doctor;
pub mod hash;
pub mod images;
pub mod inputs;
pub mod plan;
pub mod preview;
pub mod publish;
pub mod render;
pub mod rollout;
pub mod sbom;
pub mod stage;
pub mod sweep;
pub mod test;
pub mod validate;
pub mod verify;

use crate::cli::{self, Args, Command};
use crate::{iam, Config, Error};

/// Runs one command.
pub fn run(args: &Args) -> Result<(), Error> {
    let config = Config::from_args(args);
    match &args.command {
        Command::Validate(a) => validate::run(&config, a),
        Command::Hash(a) => hash::run(&config, a),
        Command::Inputs(a) => inputs::run(&config, a),
        Command::Plan(a) => plan::run(&config, a),
        Command::Render(a) => render::run(&config, a),
        Command::Stage(a) => stage::run(&config, a),
        Command::Preview(a) => preview::run(&config, a),
        Command::Bases(cli::BasesCommand::Update(a)) => bases::update(&config, a),
        Command::Build(a) => build::run(&config, a),
        Command::Test(a) => test::run(&config, a),
        Command::ImdsServe { dir } => {
            crate::local::imds::serve(dir, std::io::stdin(), std::io::stdout())
                .map_err(|e| Error::Failed(anyhow::anyhow!("imds-serve: {e}")))
        }
        Command::Publish(a) => publish::publish(&config, a),
        Command::Promote(a) => publish::promote(&config, a),
        Command::Rollback(a) => publish::rollback(&config, a),
        Command::Rollout(a) => rollout::run(&config, a),
        Command::Images(a) => images::images(&config, a),
        Command::Sbom(a) => sbom::run(&config, a),
        Command::Diff(a) => diff::run(&config, a),
        Command::Verify(a) => verify::run(&config, a),
        Command::Prune(a) => images::prune(&config, a),
        Command::Sweep(a) => sweep::run(&config, a),
        Command::Doctor => doctor::run(&config),
        Command::Schema => {
            print_json(&imagectl_core::role::schema());
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
        Command::IamPolicy(a) => iam_policy(&config, a),
    }
}

/// `imagectl iam-policy JOB [ROLE] [--env ENV] [--channel C]`.
fn iam_policy(config: &Config, a: &cli::IamPolicyArgs) -> Result<(), Error> {
    let project = config.project()?;
    let is_instance = a.job == iam::Job::Instance;
    if !is_instance && (a.role.is_some() || a.env.is_some()) {
        return Err(Error::Usage(
            "ROLE and --env are for `iam-policy instance` only".into(),
        ));
    }
    if is_instance && !a.channels.is_empty() {
        return Err(Error::Usage(
            "--channel is for `iam-policy publish`; an instance writes no channel".into(),
        ));
    }
    if let Some(env) = &a.env {
        // The agent's rule for the `env` of user data: it goes into paths.
        let ok = !env.is_empty()
            && env.len() <= 64
            && env
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !ok {
            return Err(Error::Usage(format!(
                "--env `{env}` is not an environment name: 1 to 64 letters, digits, `-` or `_`"
            )));
        }
    }
    let roles = match &a.role {
        Some(r) => imagectl_core::role::load(&project, std::slice::from_ref(r))?,
        None => Vec::new(),
    };
    let instance = roles.first().map(|r| (r, a.env.as_deref()));
    let policy = iam::policy(&project, a.job, &a.channels, instance)
        .map_err(|e| Error::Usage(e.to_string()))?;
    print_json(&policy);
    Ok(())
}

/// A runtime for one command's AWS calls.
pub fn aws_runtime() -> Result<tokio::runtime::Runtime, Error> {
    crate::aws::runtime()
        .map_err(|e| Error::Failed(anyhow::anyhow!("cannot start the async runtime: {e}")))
}

/// The agent to bake: `--agent` (or `IMAGECTL_AGENT_BIN`), else the build
/// of this checkout beside `imagectl`; says on stderr which one it took.
pub fn agent(explicit: Option<&std::path::Path>) -> Result<imagectl_core::agent::Agent, Error> {
    let exe = std::env::current_exe().ok();
    let agent = imagectl_core::agent::Agent::discover(explicit, exe.as_deref())?;
    tracing::info!(
        "agent: {} ({}, identity {})",
        agent.path.display(),
        agent.origin,
        agent.short_identity()
    );
    Ok(agent)
}

/// Prints one JSON document on stdout.
pub fn print_json<T: serde::Serialize>(value: &T) {
    match serde_json::to_string_pretty(value) {
        Ok(s) => println!("{s}"),
        Err(e) => tracing::error!("cannot encode output as JSON: {e}"),
    }
}
