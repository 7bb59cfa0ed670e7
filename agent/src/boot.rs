//! The boot flow, step by step: image configuration, identity and user
//! data, parameters, rendering, writing, starting units, health, and on EC2
//! telling Auto Scaling how it went; and the report of it at
//! `/run/imagectl/boot.json`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{json, Value};

use aws_config::SdkConfig;

use crate::autoscaling::{self, AutoScalingError, AutoScalingReport};
use crate::aws::{self, AwsError, Identity};
use crate::config::{ConfigError, ImageConfig, CONFIG_DIR, CONFIG_FILE, TEMPLATES_DIR};
use crate::files::{self, Accounts, FileError, Planned, Root};
use crate::params::{self, ParamsError};
use crate::template::{self, RenderError};
use crate::units::{self, UnitError};

/// Where the boot report is written (below the root).
pub const REPORT_PATH: &str = "/run/imagectl/boot.json";

/// The default bound on a whole boot.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(300);

/// Where the parameters come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// IMDS for identity and user data, SSM for parameters.
    Aws,
    /// A local TOML file of the same shape as the parameter tree, and an
    /// environment name given on the command line; no network at all.
    Local {
        /// The parameter file.
        params: PathBuf,
        /// The environment.
        env: String,
    },
}

/// What to do.
#[derive(Debug, Clone)]
pub struct Options {
    /// Every path is below this.
    pub root: Root,
    /// Where parameters come from.
    pub source: Source,
    /// Bound on the whole run.
    pub deadline: Duration,
    /// Start units and wait for health (`boot`), or only render and write
    /// (`render`).
    pub start: bool,
    /// Write the report (`boot` does; `render` does not).
    pub report: bool,
}

/// Why a boot failed; each variant carries the step's own error. None of
/// them carries a parameter value.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    /// The image configuration could not be read.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// IMDS or SSM failed.
    #[error(transparent)]
    Aws(#[from] AwsError),
    /// The parameters could not be arranged.
    #[error(transparent)]
    Params(#[from] ParamsError),
    /// A template did not render.
    #[error(transparent)]
    Render(#[from] RenderError),
    /// A template file could not be read.
    #[error("cannot read template `{path}`: {source}")]
    ReadTemplate {
        /// The template file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A file could not be written.
    #[error(transparent)]
    Files(#[from] FileError),
    /// A unit did not start or health did not pass.
    #[error(transparent)]
    Units(#[from] UnitError),
    /// After a healthy boot, Auto Scaling could not be told (the lifecycle
    /// hook was not completed).
    #[error(transparent)]
    AutoScaling(#[from] AutoScalingError),
    /// The boot deadline passed during a step.
    #[error("the boot deadline ({secs}s) passed during step `{step}`")]
    Deadline {
        /// The step.
        step: &'static str,
        /// The deadline.
        secs: u64,
    },
    /// The async runtime could not start.
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    /// The local environment name is not valid.
    #[error("--env: {0}")]
    Env(String),
}

/// One step in the report.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Step {
    /// Its name (`config`, `identity`, `parameters`, `render`, `write`,
    /// `start`, `health`, `autoscaling`).
    pub name: &'static str,
    /// `ok` or `failed`.
    pub status: &'static str,
    /// How long it took, in milliseconds.
    pub ms: f64,
}

/// The boot report: what happened, never a value. It is also written as
/// each step begins, with status `running` and that step in
/// `running_step`: a boot killed outright (a systemd timeout's SIGKILL)
/// still leaves a report saying where it stopped.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Report {
    /// `running`, `ok` or `failed`.
    pub status: &'static str,
    /// The step under way, while the boot runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub running_step: Option<&'static str>,
    /// The role, once known.
    pub role: Option<String>,
    /// The image hash, once known.
    pub hash: Option<String>,
    /// The environment, once known.
    pub env: Option<String>,
    /// The instance ID, once known.
    pub instance: Option<String>,
    /// How many parameters were read.
    pub parameters: usize,
    /// The step that failed.
    pub failed_step: Option<&'static str>,
    /// Why it failed.
    pub error: Option<String>,
    /// Every step run, in order.
    pub steps: Vec<Step>,
    /// Files whose contents, mode or owner changed.
    pub changed: Vec<String>,
    /// Units started.
    pub started: Vec<String>,
    /// What the agent found and told EC2 Auto Scaling; `null` when that
    /// step did not run (a local boot, or the identity is unknown).
    pub autoscaling: Option<AutoScalingReport>,
    /// Milliseconds from start to end.
    pub total_ms: f64,
}

struct Run {
    report: Report,
    /// Where the report goes, when it is written at all.
    report_root: Option<Root>,
    began: Instant,
    deadline: Instant,
    deadline_secs: u64,
}

impl Run {
    /// Runs one step, timing it and recording its outcome.
    fn step<T>(
        &mut self,
        name: &'static str,
        f: impl FnOnce(&mut Self) -> Result<T, BootError>,
    ) -> Result<T, BootError> {
        let t = self.begin(name);
        let r = if Instant::now() >= self.deadline {
            Err(BootError::Deadline {
                step: name,
                secs: self.deadline_secs,
            })
        } else {
            f(self)
        };
        self.end(name, t, r.is_ok());
        if let Err(e) = &r {
            self.report.failed_step = Some(name);
            self.report.error = Some(e.to_string());
        }
        r
    }

    /// Says in the report that step `name` is under way; returns when it
    /// began.
    fn begin(&mut self, name: &'static str) -> Instant {
        if let Some(root) = &self.report_root {
            self.report.running_step = Some(name);
            if let Err(e) = write_report(root, &self.report) {
                log(&format!("cannot write the boot report: {e}"));
            }
            self.report.running_step = None;
        }
        Instant::now()
    }

    /// Records how step `name`, begun at `t`, went.
    fn end(&mut self, name: &'static str, t: Instant, ok: bool) {
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        let status = if ok { "ok" } else { "failed" };
        self.report.steps.push(Step {
            name,
            status,
            ms: (ms * 1000.0).round() / 1000.0,
        });
        log(&format!("step {name}: {status} ({ms:.1} ms)"));
    }

    /// Runs a future to completion within what is left of the deadline.
    fn block_on<T>(
        &self,
        rt: &tokio::runtime::Runtime,
        step: &'static str,
        fut: impl std::future::Future<Output = Result<T, BootError>>,
    ) -> Result<T, BootError> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        rt.block_on(async { tokio::time::timeout(left, fut).await })
            .unwrap_or(Err(BootError::Deadline {
                step,
                secs: self.deadline_secs,
            }))
    }
}

pub use crate::log::log;

/// Runs the boot (or render) flow and writes the report. Returns the
/// report; `Err` carries the report too, with the failure recorded.
pub fn run(opts: &Options) -> Result<Report, Box<(Report, BootError)>> {
    let began = Instant::now();
    let mut run = Run {
        report: Report {
            status: "running",
            running_step: None,
            role: None,
            hash: None,
            env: None,
            instance: None,
            parameters: 0,
            failed_step: None,
            error: None,
            steps: Vec::new(),
            changed: Vec::new(),
            started: Vec::new(),
            autoscaling: None,
            total_ms: 0.0,
        },
        report_root: opts.report.then(|| opts.root.clone()),
        began,
        deadline: began + opts.deadline,
        deadline_secs: opts.deadline.as_secs(),
    };
    let mut ec2 = None;
    let result = flow(opts, &mut run, &mut ec2);
    // On EC2, once the identity is known, whatever happened since.
    let result = match ec2 {
        Some(ec2) => autoscaling_step(&mut run, ec2, result),
        None => result,
    };
    run.report.total_ms = (run.began.elapsed().as_secs_f64() * 1e6).round() / 1000.0;
    run.report.status = if result.is_ok() { "ok" } else { "failed" };
    if opts.report {
        if let Err(e) = write_report(&opts.root, &run.report) {
            log(&format!("error: cannot write the boot report: {e}"));
            if result.is_ok() {
                run.report.status = "failed";
                run.report.failed_step = Some("report");
                run.report.error = Some(e.to_string());
                return Err(Box::new((run.report, BootError::Files(e))));
            }
        }
    }
    match result {
        Ok(()) => Ok(run.report),
        Err(e) => Err(Box::new((run.report, e))),
    }
}

fn write_report(root: &Root, report: &Report) -> Result<(), FileError> {
    let mut text = serde_json::to_vec_pretty(report).unwrap_or_default();
    text.push(b'\n');
    files::write_one(root, REPORT_PATH, &text, 0o644)
}

/// Reads the image configuration below `root`, through the same resolver
/// as every file the agent writes: no link another user planted, and no
/// absolute link of the image, leads it out of the root.
pub fn load_config(root: &Root) -> Result<ImageConfig, BootError> {
    let abs = format!("{CONFIG_DIR}/{CONFIG_FILE}");
    let shown = root.path(&abs)?.display().to_string();
    let text = files::read(root, &abs)?.map_err(|source| ConfigError::Read {
        path: shown.clone(),
        source,
    })?;
    Ok(ImageConfig::parse(&shown, &text)?)
}

/// What a boot on EC2 keeps for its last step, `autoscaling`, from the
/// moment the identity is known: the runtime, the IMDS client (and its
/// token), the AWS configuration once loaded, and the role's settings.
struct Ec2 {
    rt: tokio::runtime::Runtime,
    imds: aws_config::imds::Client,
    identity: Option<Identity>,
    sdk: Option<SdkConfig>,
    lifecycle_hook: Option<String>,
    on_failure: crate::config::OnFailure,
}

fn flow(opts: &Options, run: &mut Run, ec2: &mut Option<Ec2>) -> Result<(), BootError> {
    let config = run.step("config", |_| load_config(&opts.root))?;
    run.report.role = Some(config.role.clone());
    run.report.hash = Some(config.hash.clone());

    // Identity, user data and parameters: over the network, or local.
    let (identity, env, params) = match &opts.source {
        Source::Local { params, env } => local_inputs(run, params, env)?,
        Source::Aws => aws_inputs(run, &config, ec2)?,
    };
    let mut context = base_context(&config, &env, &identity);
    context["params"] = params;

    // Every template is rendered before any file is touched.
    let plan = run.step("render", |_| render_all(opts, &config, &context))?;
    drop(context);

    let changed = run.step("write", |_| Ok(files::write_all(&opts.root, &plan)?))?;
    for c in &changed {
        log(&format!("changed {c}"));
    }
    run.report.changed = changed;
    if opts.start {
        start_and_check(run, &config)?;
    }
    Ok(())
}

/// `--params` and `--env`: no identity to read, parameters from a file.
fn local_inputs(
    run: &mut Run,
    params: &std::path::Path,
    env: &str,
) -> Result<(Identity, String, Value), BootError> {
    let identity = Identity {
        id: "local".to_string(),
        region: "local".to_string(),
        az: "local".to_string(),
    };
    run.report.env = Some(env.to_string());
    run.report.instance = Some(identity.id.clone());
    let tree = run.step("parameters", |_| {
        aws::check_env(env).map_err(BootError::Env)?;
        Ok(params::from_toml_file(params)?)
    })?;
    run.report.parameters = count_leaves(&tree);
    Ok((identity, env.to_string(), tree))
}

/// On EC2: the identity and user data from IMDSv2, the parameters below
/// the role's path from SSM. Once the identity is known, `ec2` holds what
/// the `autoscaling` step needs.
fn aws_inputs(
    run: &mut Run,
    config: &ImageConfig,
    ec2: &mut Option<Ec2>,
) -> Result<(Identity, String, Value), BootError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(BootError::Runtime)?;
    let imds = {
        let _in_runtime = rt.enter();
        aws::imds()
    };
    let session = ec2.insert(Ec2 {
        rt,
        imds,
        identity: None,
        sdk: None,
        lifecycle_hook: config.boot.lifecycle_hook.clone(),
        on_failure: config.boot.on_failure,
    });
    let Ec2 {
        rt,
        imds,
        identity: known,
        sdk,
        ..
    } = session;
    let (identity, user_data) = run.step("identity", |r| {
        r.block_on(rt, "identity", async {
            let identity = aws::identity(imds).await?;
            // Known from here on, whatever fails next: Auto Scaling can
            // be told about this instance.
            *known = Some(identity.clone());
            let user_data = aws::user_data(imds).await?;
            Ok((identity, user_data))
        })
    })?;
    run.report.env = Some(user_data.env.clone());
    run.report.instance = Some(identity.id.clone());
    let env = user_data.env;
    let base = base_context(config, &env, &identity);
    let given = user_data.parameters;
    let tree = run.step("parameters", |r| {
        if let Some(table) = given {
            // A test boot (`imagectl test --vm`): no SSM to read.
            log("parameters: from the user data's [parameters], not SSM (a test boot)");
            let tree = params::from_table("user data [parameters]", table)?;
            r.report.parameters = count_leaves(&tree);
            return Ok(tree);
        }
        let Some(path_template) = &config.boot.parameters else {
            return Ok(Value::Object(Default::default()));
        };
        let mut hb = template::registry();
        let path = template::render(
            &mut hb,
            "[boot] parameters",
            path_template,
            &base,
            &template::Multiline::Off,
        )?;
        let pairs = r.block_on(rt, "parameters", async {
            let config = aws::sdk_config(&identity.region).await;
            let ssm = aws::ssm(&config);
            // Loaded once: the Auto Scaling client is built from it too.
            *sdk = Some(config);
            Ok(aws::parameters_by_path(&ssm, &path).await?)
        })?;
        r.report.parameters = pairs.len();
        Ok(params::nest(
            &path,
            pairs.iter().map(|(n, v)| (n.as_str(), v.as_str())),
        )?)
    })?;
    Ok((identity, env, tree))
}

/// The last step on EC2, after a healthy or a failed boot: tells Auto
/// Scaling what the role says (`crate::autoscaling`). After a healthy
/// boot it is bound by the deadline, and a lifecycle hook it could not
/// complete fails the boot; after a failed boot it gets at least
/// [`autoscaling::AFTER_FAILURE`] even when the deadline has passed, and
/// the boot's own failure stays the one reported.
fn autoscaling_step(
    run: &mut Run,
    mut ec2: Ec2,
    result: Result<(), BootError>,
) -> Result<(), BootError> {
    let Some(identity) = ec2.identity.take() else {
        return result;
    };
    if run.report.instance.is_none() {
        run.report.instance = Some(identity.id.clone());
    }
    let boot_ok = result.is_ok();
    let t = run.begin("autoscaling");
    let now = Instant::now();
    let after_failure = now + autoscaling::AFTER_FAILURE;
    let (until, bound) = if boot_ok || run.deadline >= after_failure {
        (
            run.deadline,
            format!("the boot deadline ({}s)", run.deadline_secs),
        )
    } else {
        (
            after_failure,
            format!(
                "the {}s bound on telling Auto Scaling after a failed boot",
                autoscaling::AFTER_FAILURE.as_secs()
            ),
        )
    };
    let req = autoscaling::Request {
        instance: &identity.id,
        boot_ok,
        hook: ec2.lifecycle_hook.as_deref(),
        on_failure: ec2.on_failure,
        until: tokio::time::Instant::from_std(until),
        bound,
    };
    let mut api = autoscaling::Api::new(ec2.sdk.take(), &identity.region);
    let (report, told) = ec2
        .rt
        .block_on(autoscaling::tell(&req, &ec2.imds, &mut api));
    run.report.autoscaling = Some(report);
    run.end("autoscaling", t, told.is_ok());
    match (result, told) {
        (Err(e), _) => Err(e),
        (Ok(()), Err(e)) => {
            let e = BootError::from(e);
            run.report.failed_step = Some("autoscaling");
            run.report.error = Some(e.to_string());
            Err(e)
        }
        (Ok(()), Ok(())) => Ok(()),
    }
}

/// Renders every boot template with `context`, each with the mode and
/// owner its file gets; nothing is written yet.
fn render_all(
    opts: &Options,
    config: &ImageConfig,
    context: &Value,
) -> Result<Vec<Planned>, BootError> {
    let accounts = Accounts::load(&opts.root)?;
    let mut hb = template::registry();
    let mut plan = Vec::with_capacity(config.boot.templates.len());
    for t in &config.boot.templates {
        // The source path exactly as in the role, below the templates
        // directory: `templates/worker/x.hbs` is at
        // `/etc/imagectl/templates/templates/worker/x.hbs`.
        let abs = format!(
            "{CONFIG_DIR}/{TEMPLATES_DIR}/{}",
            files::relative(&t.source)?.display()
        );
        let shown = opts.root.path(&abs)?.display().to_string();
        let read_err = |source| BootError::ReadTemplate {
            path: shown.clone(),
            source,
        };
        let bytes = files::read(&opts.root, &abs)?.map_err(read_err)?;
        let source = String::from_utf8(bytes).map_err(|e| {
            read_err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                e.utf8_error(),
            ))
        })?;
        let out = template::render(&mut hb, &t.source, &source, context, &t.multiline)?;
        plan.push(Planned {
            dest: t.dest.clone(),
            contents: out.into_bytes(),
            mode: files::parse_mode(&t.dest, &t.mode)?,
            uid: accounts.uid(&t.owner, &t.dest)?,
            gid: accounts.gid(&t.group, &t.dest)?,
        });
    }
    Ok(plan)
}

/// Starts the units in order, then waits for health.
fn start_and_check(run: &mut Run, config: &ImageConfig) -> Result<(), BootError> {
    let start = config.boot.start.clone();
    run.step("start", |r| {
        for unit in &start {
            units::start(std::slice::from_ref(unit))?;
            r.report.started.push(unit.clone());
        }
        Ok(())
    })?;
    if let Some(health) = &config.boot.health {
        run.step("health", |r| {
            Ok(units::wait_healthy(
                health,
                r.deadline,
                Duration::from_millis(500),
            )?)
        })?;
    }
    Ok(())
}

/// The template context without `params`: `env`, `role`, `instance.*`,
/// `image.hash`.
fn base_context(config: &ImageConfig, env: &str, identity: &Identity) -> Value {
    json!({
        "env": env,
        "role": config.role,
        "instance": {"id": identity.id, "region": identity.region, "az": identity.az},
        "image": {"hash": config.hash},
    })
}

fn count_leaves(v: &Value) -> usize {
    match v {
        Value::Object(m) => m.values().map(count_leaves).sum(),
        _ => 1,
    }
}
