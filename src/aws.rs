//! Thin calls to the AWS SDK: images, parameters, launch templates. Every
//! error names the operation, the region and the resource; nothing here
//! decides anything.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_ec2::config::http::HttpResponse;
use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_ec2::types::{
    AttributeValue, Filter, LaunchPermission, LaunchPermissionModifications,
    LaunchTemplateHttpTokensState, LaunchTemplateInstanceMetadataEndpointState,
    LaunchTemplateInstanceMetadataOptionsRequest, RequestLaunchTemplateData, SnapshotAttributeName,
    Tag,
};
use aws_sdk_ssm::types::ParameterType;
use imagectl_agent::aws::chain;

/// An AWS call that failed.
#[derive(Debug, thiserror::Error)]
#[error("AWS {operation} in `{region}` failed{}: {message}", resource.as_deref().map(|r| format!(" for {r}")).unwrap_or_default())]
pub struct Error {
    /// The API operation (`DescribeImages`).
    pub operation: &'static str,
    /// The region it was sent to.
    pub region: String,
    /// What it was about, when it was about one thing, as the message
    /// names it (``parameter `/imagectl/app/dev` ``, ``images of role `app` ``).
    pub resource: Option<String>,
    /// The SDK's error with its causes.
    pub message: String,
}

impl Error {
    fn new<E>(
        operation: &'static str,
        region: &str,
        resource: Option<&str>,
        e: SdkError<E, HttpResponse>,
    ) -> Error
    where
        E: std::error::Error + ProvideErrorMetadata + 'static,
    {
        let message = match &e {
            // The SDK's own words name a timeout kind and no call.
            SdkError::TimeoutError(_) => format!(
                "no answer within {} s; {}",
                attempt_timeout().as_secs(),
                gave_up()
            ),
            // No request reached AWS (connection refused, DNS, TLS).
            SdkError::DispatchFailure(_) => format!(
                "cannot reach AWS ({}); {}",
                chain(&e).trim_start_matches("dispatch failure: "),
                gave_up()
            ),
            // An answer the SDK could not read (moto's XML AccessDenied to
            // a JSON API, a proxy's HTML page): what it said, briefly.
            SdkError::ResponseError(r) => format!(
                "{}: HTTP {}: {}",
                chain(&e),
                r.raw().status().as_u16(),
                excerpt(r.raw().body().bytes().unwrap_or_default())
            ),
            _ => describe(&e),
        };
        Error {
            operation,
            region: region.to_string(),
            resource: resource.map(|r| format!("`{r}`")),
            message,
        }
    }

    /// An error that is not the SDK's (a wait that ran out, say).
    pub fn other(
        operation: &'static str,
        region: &str,
        resource: Option<&str>,
        message: String,
    ) -> Error {
        Error {
            operation,
            region: region.to_string(),
            resource: resource.map(|r| format!("`{r}`")),
            message,
        }
    }

    /// Names the resource when the call itself named none (a search by
    /// tag, say, that the caller knows was about one role).
    pub fn about(mut self, resource: impl Into<String>) -> Error {
        self.resource.get_or_insert_with(|| resource.into());
        self
    }
}

/// Error codes AWS answers when it throttles (EC2's query API, the JSON
/// APIs, and the older spellings some services still use).
const THROTTLING_CODES: &[&str] = &[
    "RequestLimitExceeded",
    "ThrottlingException",
    "Throttling",
    "ThrottledException",
    "TooManyRequestsException",
    "RequestThrottled",
    "RequestThrottledException",
    "SlowDown",
    "PriorRequestNotComplete",
];

/// Error codes of AWS failing on its side, which the SDK retries too.
const SERVER_CODES: &[&str] = &[
    "InternalError",
    "InternalFailure",
    "InternalServerError",
    "ServiceUnavailable",
    "Unavailable",
    "RequestTimeout",
    "RequestTimeoutException",
];

/// What went wrong, in AWS's own words: the error code and message (not
/// the SDK's `service error` wrapper), and for the errors the SDK retries,
/// that it gave up after the bound.
fn describe<E: std::error::Error + ProvideErrorMetadata>(e: &E) -> String {
    let Some(code) = e.code() else {
        // Not an answer from AWS: a response the SDK could not read, say.
        // Its chain of causes says which.
        return chain(e);
    };
    let said = match e.message() {
        Some(m) if !m.is_empty() => format!("`{code}`: {m}"),
        _ => format!("`{code}`"),
    };
    // The standard retry strategy tries these up to the bound (its retry
    // quota, 100 failed retries per process, is never the limit for one
    // command); an error coming back here means every attempt failed.
    if THROTTLING_CODES.contains(&code) {
        format!("throttled ({said}); {}", gave_up())
    } else if SERVER_CODES.contains(&code) {
        format!("AWS failed on its side ({said}); {}", gave_up())
    } else {
        said
    }
}

/// The end of the message of an error the SDK retried to the bound.
fn gave_up() -> String {
    let n = max_attempts();
    format!(
        "gave up after {n} attempt{} (the bound: set {MAX_ATTEMPTS_ENV} to change it)",
        if n == 1 { "" } else { "s" }
    )
}

/// The start of a response body on one line: up to 300 characters, runs
/// of whitespace and control characters as one space.
fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut out = String::new();
    for word in text.split(|c: char| c.is_whitespace() || c.is_control()) {
        if word.is_empty() {
            continue;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
        if out.chars().count() > 300 {
            let cut: String = out.chars().take(300).collect();
            return format!("{cut}...");
        }
    }
    out
}

fn err<E>(
    operation: &'static str,
    region: &str,
    resource: Option<&str>,
) -> impl FnOnce(SdkError<E, HttpResponse>) -> Error
where
    E: std::error::Error + ProvideErrorMetadata + 'static,
{
    let region = region.to_string();
    let resource = resource.map(String::from);
    move |e| Error::new(operation, &region, resource.as_deref(), e)
}

/// The environment variable that overrides the retry bound: the AWS SDKs'
/// and CLI's own name for it, so one setting covers every AWS tool a
/// pipeline runs.
pub const MAX_ATTEMPTS_ENV: &str = "AWS_MAX_ATTEMPTS";

/// Attempts per AWS call (the first and the retries) unless
/// `AWS_MAX_ATTEMPTS` says otherwise. Eight, where the SDK's default is
/// three: a build that fails on throttling costs a re-run of many minutes,
/// so imagectl rides out a busy account (~35 s of backoff on average,
/// 71 s at most) before giving up.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 8;

/// The longest single backoff between attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(20);

/// The environment variable that overrides how long one attempt of an AWS
/// call may take, in seconds.
pub const ATTEMPT_TIMEOUT_ENV: &str = "IMAGECTL_AWS_ATTEMPT_TIMEOUT";

/// How long one attempt may take before it is abandoned and retried like a
/// throttled one. Without a limit, a connection that goes quiet (a NAT
/// gateway dropping state, a proxy holding the request) hangs a build
/// until CI's job timeout, hours later. EC2 and SSM answer in seconds,
/// creating calls included: they return before the work is done.
pub const DEFAULT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(60);

fn attempt_timeout_from(value: Option<&str>) -> Result<Duration, String> {
    match value.map(str::trim).filter(|v| !v.is_empty()) {
        None => Ok(DEFAULT_ATTEMPT_TIMEOUT),
        Some(v) => match v.parse::<u64>() {
            Ok(n @ 1..=3600) => Ok(Duration::from_secs(n)),
            _ => Err(format!(
                "`{ATTEMPT_TIMEOUT_ENV}={v}` is not a number of seconds from 1 to 3600; using {}",
                DEFAULT_ATTEMPT_TIMEOUT.as_secs()
            )),
        },
    }
}

fn max_attempts_from(value: Option<&str>) -> Result<u32, String> {
    match value.map(str::trim).filter(|v| !v.is_empty()) {
        None => Ok(DEFAULT_MAX_ATTEMPTS),
        Some(v) => match v.parse::<u32>() {
            Ok(n @ 1..=50) => Ok(n),
            _ => Err(format!(
                "`{MAX_ATTEMPTS_ENV}={v}` is not a number of attempts from 1 to 50; using {DEFAULT_MAX_ATTEMPTS}"
            )),
        },
    }
}

/// The time one attempt may take in effect: `IMAGECTL_AWS_ATTEMPT_TIMEOUT`
/// when it is a number of seconds from 1 to 3600, else
/// [`DEFAULT_ATTEMPT_TIMEOUT`].
pub fn attempt_timeout() -> Duration {
    attempt_timeout_from(std::env::var(ATTEMPT_TIMEOUT_ENV).ok().as_deref())
        .unwrap_or(DEFAULT_ATTEMPT_TIMEOUT)
}

/// The attempts per AWS call in effect: `AWS_MAX_ATTEMPTS` when it is a
/// number from 1 to 50, else [`DEFAULT_MAX_ATTEMPTS`]. Packer gets the same
/// bound (as `max_retries`, one less).
pub fn max_attempts() -> u32 {
    max_attempts_from(std::env::var(MAX_ATTEMPTS_ENV).ok().as_deref())
        .unwrap_or(DEFAULT_MAX_ATTEMPTS)
}

/// Credentials and settings from the default chain (environment, profiles,
/// SSO, web identity in CI, instance roles) with the SDK's standard retries
/// (throttling, 5xx, timeouts) up to [`max_attempts`], exponential backoff
/// with jitter from 1 s up to [`MAX_BACKOFF`], each attempt limited to
/// [`DEFAULT_ATTEMPT_TIMEOUT`]; `AWS_ENDPOINT_URL` points every client at
/// an emulator.
#[derive(Debug, Clone)]
pub struct Session {
    config: SdkConfig,
}

impl Session {
    /// Loads the default configuration with `region` as the home region.
    pub async fn load(region: &str) -> Session {
        if let Err(warning) = max_attempts_from(std::env::var(MAX_ATTEMPTS_ENV).ok().as_deref()) {
            tracing::warn!("{warning}");
        }
        if let Err(warning) =
            attempt_timeout_from(std::env::var(ATTEMPT_TIMEOUT_ENV).ok().as_deref())
        {
            tracing::warn!("{warning}");
        }
        // Set explicitly, the retry configuration wins over aws-config's own
        // reading of AWS_MAX_ATTEMPTS: max_attempts() reads it instead.
        let retry = aws_config::retry::RetryConfig::standard()
            .with_max_attempts(max_attempts())
            .with_max_backoff(MAX_BACKOFF);
        let config = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(region.to_string()))
            .retry_config(retry)
            .timeout_config(
                // Replaces the SDK's defaults: its 3.1 s to connect kept.
                aws_config::timeout::TimeoutConfig::builder()
                    .connect_timeout(Duration::from_millis(3100))
                    .operation_attempt_timeout(attempt_timeout())
                    .build(),
            )
            .load()
            .await;
        Session { config }
    }

    /// An EC2 client for `region`.
    pub fn ec2(&self, region: &str) -> Ec2 {
        let conf = aws_sdk_ec2::config::Builder::from(&self.config)
            .region(Region::new(region.to_string()))
            .build();
        Ec2 {
            client: aws_sdk_ec2::Client::from_conf(conf),
            region: region.to_string(),
        }
    }

    /// An SSM client for `region`.
    pub fn ssm(&self, region: &str) -> Ssm {
        let conf = aws_sdk_ssm::config::Builder::from(&self.config)
            .region(Region::new(region.to_string()))
            .build();
        Ssm {
            client: aws_sdk_ssm::Client::from_conf(conf),
            region: region.to_string(),
        }
    }
}

/// What imagectl needs to know about an AMI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    /// `ami-...`.
    pub id: String,
    /// The image name.
    pub name: String,
    /// The owning account.
    pub owner: String,
    /// `x86_64` or `arm64`.
    pub arch: String,
    /// ISO 8601 creation time, as EC2 reports it.
    pub created: String,
    /// `available`, `pending`, ...
    pub state: String,
    /// Its tags.
    pub tags: BTreeMap<String, String>,
    /// The snapshots behind it.
    pub snapshots: Vec<String>,
    /// `v2.0` when instances launched from it must use IMDSv2.
    pub imds_support: Option<String>,
}

impl ImageInfo {
    /// The value of a tag.
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags.get(key).map(String::as_str)
    }
}

fn image_info(image: &aws_sdk_ec2::types::Image) -> ImageInfo {
    ImageInfo {
        id: image.image_id().unwrap_or_default().to_string(),
        name: image.name().unwrap_or_default().to_string(),
        owner: image.owner_id().unwrap_or_default().to_string(),
        arch: image
            .architecture()
            .map(|a| a.as_str().to_string())
            .unwrap_or_default(),
        created: image.creation_date().unwrap_or_default().to_string(),
        state: image
            .state()
            .map(|s| s.as_str().to_string())
            .unwrap_or_default(),
        tags: tag_map(image.tags()),
        snapshots: image
            .block_device_mappings()
            .iter()
            .filter_map(|b| b.ebs().and_then(|e| e.snapshot_id()).map(String::from))
            .collect(),
        imds_support: image.imds_support().map(|v| v.as_str().to_string()),
    }
}

/// An instance, volume, snapshot, key pair or security group: what
/// `imagectl sweep` needs to know to decide whether it is an orphan.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Resource {
    /// `i-...`, `vol-...`, `snap-...`, the key pair's name, `sg-...`.
    pub id: String,
    /// The `Name` tag, or the group's or key pair's own name.
    pub name: String,
    /// `running`, `stopped`, `available`, `completed`, ... (empty when EC2
    /// has no state for the kind).
    pub state: String,
    /// Creation (or launch) time, seconds since the Unix epoch, when EC2
    /// reports one.
    pub created: Option<i64>,
    /// Its tags.
    pub tags: BTreeMap<String, String>,
    /// For an instance: the image, key pair and security groups it uses.
    pub uses: Vec<String>,
}

impl Resource {
    /// A resource known by its `Name` tag, using nothing.
    fn tagged(id: Option<&str>, state: String, created: Option<i64>, tags: &[Tag]) -> Resource {
        let tags = tag_map(tags);
        Resource {
            id: id.unwrap_or_default().to_string(),
            name: tags.get("Name").cloned().unwrap_or_default(),
            state,
            created,
            tags,
            uses: Vec::new(),
        }
    }

    /// The value of a tag.
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags.get(key).map(String::as_str)
    }
}

fn tag_map(tags: &[Tag]) -> BTreeMap<String, String> {
    tags.iter()
        .map(|t| {
            (
                t.key().unwrap_or_default().to_string(),
                t.value().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

fn secs(t: Option<&aws_sdk_ec2::primitives::DateTime>) -> Option<i64> {
    t.map(aws_sdk_ec2::primitives::DateTime::secs)
}

/// Seconds since the Unix epoch of an ISO 8601 time as EC2 writes it
/// (`2026-01-01T00:00:00.000Z`, an image's creation date).
pub fn iso_secs(s: &str) -> Option<i64> {
    aws_sdk_ec2::primitives::DateTime::from_str(
        s,
        aws_sdk_ec2::primitives::DateTimeFormat::DateTime,
    )
    .ok()
    .map(|t| t.secs())
}

/// EC2 in one region.
#[derive(Debug, Clone)]
pub struct Ec2 {
    client: aws_sdk_ec2::Client,
    /// The region.
    pub region: String,
}

/// A launch template and its versions' images.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchTemplate {
    /// Its name.
    pub name: String,
    /// The default version.
    pub default_version: i64,
    /// The latest version.
    pub latest_version: i64,
    /// The image ID of each version (as written: an AMI ID or `resolve:ssm:...`).
    pub images: BTreeMap<i64, String>,
}

impl Ec2 {
    /// All images matching `owners` and the `filters` (name, values), every page.
    pub async fn describe_images(
        &self,
        owners: &[String],
        filters: &[(&str, Vec<String>)],
    ) -> Result<Vec<ImageInfo>, Error> {
        let mut req = self
            .client
            .describe_images()
            .set_owners((!owners.is_empty()).then(|| owners.to_vec()));
        for (name, values) in filters {
            req = req.filters(
                Filter::builder()
                    .name(*name)
                    .set_values(Some(values.clone()))
                    .build(),
            );
        }
        let mut pages = req.into_paginator().items().send();
        let mut out = Vec::new();
        while let Some(item) = pages.next().await {
            let image = item.map_err(err("DescribeImages", &self.region, None))?;
            out.push(image_info(&image));
        }
        Ok(out)
    }

    /// The images with these IDs that exist (missing ones are left out).
    pub async fn images_by_id(&self, ids: &[String]) -> Result<Vec<ImageInfo>, Error> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        // Asking by filter rather than by ImageIds: an unknown ID is then no
        // match instead of an error for the whole call.
        self.describe_images(&[], &[("image-id", ids.to_vec())])
            .await
    }

    /// Every image this account owns that imagectl built, optionally only
    /// for some roles.
    pub async fn imagectl_images(&self, roles: &[String]) -> Result<Vec<ImageInfo>, Error> {
        let filter = if roles.is_empty() {
            ("tag-key", vec!["imagectl:role".to_string()])
        } else {
            ("tag:imagectl:role", roles.to_vec())
        };
        let what = if roles.is_empty() {
            "imagectl's images".to_string()
        } else {
            let named: Vec<String> = roles.iter().map(|r| format!("`{r}`")).collect();
            format!("images of role {}", named.join(", "))
        };
        self.describe_images(&["self".to_string()], &[filter])
            .await
            .map_err(|e| e.about(what))
    }

    /// Adds or replaces tags on resources.
    pub async fn create_tags(
        &self,
        resources: &[String],
        tags: &BTreeMap<String, String>,
    ) -> Result<(), Error> {
        let mut req = self
            .client
            .create_tags()
            .set_resources(Some(resources.to_vec()));
        for (k, v) in tags {
            req = req.tags(Tag::builder().key(k).value(v).build());
        }
        req.send().await.map_err(err(
            "CreateTags",
            &self.region,
            resources.first().map(String::as_str),
        ))?;
        Ok(())
    }

    /// Copies an image from another region into this one, encrypted.
    pub async fn copy_image(
        &self,
        source_region: &str,
        source: &ImageInfo,
        kms_key: Option<&str>,
    ) -> Result<String, Error> {
        let out = self
            .client
            .copy_image()
            .source_region(source_region)
            .source_image_id(&source.id)
            .name(&source.name)
            .encrypted(true)
            .set_kms_key_id(kms_key.map(String::from))
            .send()
            .await
            .map_err(err("CopyImage", &self.region, Some(&source.id)))?;
        Ok(out.image_id().unwrap_or_default().to_string())
    }

    /// Shares an image and its snapshots with accounts.
    pub async fn share(&self, image: &ImageInfo, accounts: &[String]) -> Result<(), Error> {
        if accounts.is_empty() {
            return Ok(());
        }
        let mut perms = LaunchPermissionModifications::builder();
        for a in accounts {
            perms = perms.add(LaunchPermission::builder().user_id(a).build());
        }
        self.client
            .modify_image_attribute()
            .image_id(&image.id)
            .launch_permission(perms.build())
            .send()
            .await
            .map_err(err("ModifyImageAttribute", &self.region, Some(&image.id)))?;
        for snap in &image.snapshots {
            // The OperationType form of the call: EC2 takes both, and
            // emulators know this one.
            self.client
                .modify_snapshot_attribute()
                .snapshot_id(snap)
                .attribute(SnapshotAttributeName::CreateVolumePermission)
                .operation_type(aws_sdk_ec2::types::OperationType::Add)
                .set_user_ids(Some(accounts.to_vec()))
                .send()
                .await
                .map_err(err("ModifySnapshotAttribute", &self.region, Some(snap)))?;
        }
        Ok(())
    }

    /// Requires IMDSv2 on every instance launched from the image.
    pub async fn require_imdsv2(&self, image: &str) -> Result<(), Error> {
        self.client
            .modify_image_attribute()
            .image_id(image)
            .imds_support(AttributeValue::builder().value("v2.0").build())
            .send()
            .await
            .map_err(err("ModifyImageAttribute", &self.region, Some(image)))?;
        Ok(())
    }

    /// Requires IMDSv2 tokens on a running instance.
    pub async fn require_imdsv2_on_instance(&self, instance: &str) -> Result<(), Error> {
        self.client
            .modify_instance_metadata_options()
            .instance_id(instance)
            .http_tokens(aws_sdk_ec2::types::HttpTokensState::Required)
            .http_endpoint(aws_sdk_ec2::types::InstanceMetadataEndpointState::Enabled)
            .send()
            .await
            .map_err(err(
                "ModifyInstanceMetadataOptions",
                &self.region,
                Some(instance),
            ))?;
        Ok(())
    }

    /// Waits until every image is available, polling, for at most `timeout`.
    pub async fn wait_available(
        &self,
        ids: &[String],
        timeout: Duration,
    ) -> Result<Vec<ImageInfo>, Error> {
        let start = Instant::now();
        let mut delay = Duration::from_secs(2);
        loop {
            let found = self.images_by_id(ids).await?;
            if let Some(failed) = found
                .iter()
                .find(|i| i.state == "failed" || i.state == "error")
            {
                return Err(Error::other(
                    "DescribeImages",
                    &self.region,
                    Some(&failed.id),
                    "the image failed".into(),
                ));
            }
            if found.len() == ids.len() && found.iter().all(|i| i.state == "available") {
                return Ok(found);
            }
            if start.elapsed() >= timeout {
                return Err(Error::other(
                    "DescribeImages",
                    &self.region,
                    Some(&ids.join(", ")),
                    format!("not available after {} s; it may still finish: run the command again to pick it up", timeout.as_secs()),
                ));
            }
            tokio::time::sleep(delay.min(timeout.saturating_sub(start.elapsed()))).await;
            delay = (delay * 2).min(Duration::from_secs(30));
        }
    }

    /// Deregisters an image and deletes its snapshots.
    pub async fn delete_image(&self, image: &ImageInfo) -> Result<(), Error> {
        self.deregister_image(&image.id).await?;
        for snap in &image.snapshots {
            self.delete_snapshot(snap).await?;
        }
        Ok(())
    }

    /// The images that instances (pending, running, stopping or stopped) were
    /// launched from, among `ids`.
    pub async fn images_in_use(&self, ids: &[String]) -> Result<Vec<String>, Error> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let states = ["pending", "running", "stopping", "stopped"]
            .map(String::from)
            .to_vec();
        let mut pages = self
            .client
            .describe_instances()
            .filters(
                Filter::builder()
                    .name("image-id")
                    .set_values(Some(ids.to_vec()))
                    .build(),
            )
            .filters(
                Filter::builder()
                    .name("instance-state-name")
                    .set_values(Some(states))
                    .build(),
            )
            .into_paginator()
            .items()
            .send();
        let mut out = Vec::new();
        while let Some(r) = pages.next().await {
            let reservation = r.map_err(err("DescribeInstances", &self.region, None))?;
            for i in reservation.instances() {
                if let Some(id) = i.image_id() {
                    out.push(id.to_string());
                }
            }
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// Instances carrying a tag, as (instance ID, state).
    pub async fn instances_tagged(
        &self,
        key: &str,
        value: &str,
    ) -> Result<Vec<(String, String)>, Error> {
        let mut pages = self
            .client
            .describe_instances()
            .filters(
                Filter::builder()
                    .name(format!("tag:{key}"))
                    .values(value)
                    .build(),
            )
            .into_paginator()
            .items()
            .send();
        let mut out = Vec::new();
        while let Some(r) = pages.next().await {
            let reservation = r.map_err(err("DescribeInstances", &self.region, None))?;
            for i in reservation.instances() {
                let state = i
                    .state()
                    .and_then(|s| s.name())
                    .map(|n| n.as_str().to_string())
                    .unwrap_or_default();
                out.push((i.instance_id().unwrap_or_default().to_string(), state));
            }
        }
        Ok(out)
    }

    /// Every instance that is pending, running, stopping or stopped, with
    /// what it uses.
    pub async fn live_instances(&self) -> Result<Vec<Resource>, Error> {
        let states = ["pending", "running", "stopping", "stopped"]
            .map(String::from)
            .to_vec();
        let mut pages = self
            .client
            .describe_instances()
            .filters(
                Filter::builder()
                    .name("instance-state-name")
                    .set_values(Some(states))
                    .build(),
            )
            .into_paginator()
            .items()
            .send();
        let mut out = Vec::new();
        while let Some(r) = pages.next().await {
            let reservation = r.map_err(err("DescribeInstances", &self.region, None))?;
            for i in reservation.instances() {
                let state = i.state().and_then(|s| s.name()).map(|n| n.as_str());
                let mut r = Resource::tagged(
                    i.instance_id(),
                    state.unwrap_or_default().to_string(),
                    secs(i.launch_time()),
                    i.tags(),
                );
                r.uses.extend(i.image_id().map(String::from));
                r.uses.extend(i.key_name().map(String::from));
                r.uses.extend(
                    i.security_groups()
                        .iter()
                        .filter_map(|g| g.group_id().map(String::from)),
                );
                out.push(r);
            }
        }
        Ok(out)
    }

    /// Terminates an instance.
    pub async fn terminate_instance(&self, id: &str) -> Result<(), Error> {
        self.client
            .terminate_instances()
            .instance_ids(id)
            .send()
            .await
            .map_err(err("TerminateInstances", &self.region, Some(id)))?;
        Ok(())
    }

    /// Waits until every instance of `ids` is terminated, polling, for at
    /// most `timeout`.
    pub async fn wait_terminated(&self, ids: &[String], timeout: Duration) -> Result<(), Error> {
        if ids.is_empty() {
            return Ok(());
        }
        let start = Instant::now();
        let mut delay = Duration::from_secs(1);
        loop {
            let mut pages = self
                .client
                .describe_instances()
                .filters(
                    Filter::builder()
                        .name("instance-id")
                        .set_values(Some(ids.to_vec()))
                        .build(),
                )
                .into_paginator()
                .items()
                .send();
            let mut left = Vec::new();
            while let Some(r) = pages.next().await {
                let reservation = r.map_err(err("DescribeInstances", &self.region, None))?;
                for i in reservation.instances() {
                    if i.state().and_then(|s| s.name()).map(|n| n.as_str()) != Some("terminated") {
                        left.push(i.instance_id().unwrap_or_default().to_string());
                    }
                }
            }
            if left.is_empty() {
                return Ok(());
            }
            if start.elapsed() >= timeout {
                return Err(Error::other(
                    "DescribeInstances",
                    &self.region,
                    Some(&left.join(", ")),
                    format!("not terminated after {} s", timeout.as_secs()),
                ));
            }
            tokio::time::sleep(delay.min(timeout.saturating_sub(start.elapsed()))).await;
            delay = (delay * 2).min(Duration::from_secs(15));
        }
    }

    /// Deregisters an image (its snapshots stay).
    pub async fn deregister_image(&self, id: &str) -> Result<(), Error> {
        self.client
            .deregister_image()
            .image_id(id)
            .send()
            .await
            .map_err(err("DeregisterImage", &self.region, Some(id)))?;
        Ok(())
    }

    /// Deletes a snapshot.
    pub async fn delete_snapshot(&self, id: &str) -> Result<(), Error> {
        self.client
            .delete_snapshot()
            .snapshot_id(id)
            .send()
            .await
            .map_err(err("DeleteSnapshot", &self.region, Some(id)))?;
        Ok(())
    }

    /// The snapshots this account owns that carry the tag `key`.
    pub async fn snapshots_tagged(&self, key: &str) -> Result<Vec<Resource>, Error> {
        let mut pages = self
            .client
            .describe_snapshots()
            .owner_ids("self")
            .filters(Filter::builder().name("tag-key").values(key).build())
            .into_paginator()
            .items()
            .send();
        let mut out = Vec::new();
        while let Some(s) = pages.next().await {
            let s = s.map_err(err("DescribeSnapshots", &self.region, None))?;
            let state = s.state().map(|v| v.as_str()).unwrap_or_default();
            out.push(Resource::tagged(
                s.snapshot_id(),
                state.to_string(),
                secs(s.start_time()),
                s.tags(),
            ));
        }
        Ok(out)
    }

    /// The volumes attached to nothing that carry the tag `key`.
    pub async fn detached_volumes_tagged(&self, key: &str) -> Result<Vec<Resource>, Error> {
        let mut pages = self
            .client
            .describe_volumes()
            .filters(Filter::builder().name("tag-key").values(key).build())
            .filters(Filter::builder().name("status").values("available").build())
            .into_paginator()
            .items()
            .send();
        let mut out = Vec::new();
        while let Some(v) = pages.next().await {
            let v = v.map_err(err("DescribeVolumes", &self.region, None))?;
            let state = v.state().map(|s| s.as_str()).unwrap_or_default();
            out.push(Resource::tagged(
                v.volume_id(),
                state.to_string(),
                secs(v.create_time()),
                v.tags(),
            ));
        }
        Ok(out)
    }

    /// Deletes a volume.
    pub async fn delete_volume(&self, id: &str) -> Result<(), Error> {
        self.client
            .delete_volume()
            .volume_id(id)
            .send()
            .await
            .map_err(err("DeleteVolume", &self.region, Some(id)))?;
        Ok(())
    }

    /// The key pairs whose names match `pattern` (`*` wildcards); the
    /// resource's ID is the key pair's name, which is what deleting takes.
    pub async fn key_pairs_named(&self, pattern: &str) -> Result<Vec<Resource>, Error> {
        let out = self
            .client
            .describe_key_pairs()
            .filters(Filter::builder().name("key-name").values(pattern).build())
            .send()
            .await
            .map_err(err("DescribeKeyPairs", &self.region, Some(pattern)))?;
        Ok(out
            .key_pairs()
            .iter()
            .map(|k| Resource {
                id: k.key_name().unwrap_or_default().to_string(),
                name: k.key_name().unwrap_or_default().to_string(),
                state: String::new(),
                created: secs(k.create_time()),
                tags: tag_map(k.tags()),
                uses: Vec::new(),
            })
            .collect())
    }

    /// Deletes a key pair by name.
    pub async fn delete_key_pair(&self, name: &str) -> Result<(), Error> {
        self.client
            .delete_key_pair()
            .key_name(name)
            .send()
            .await
            .map_err(err("DeleteKeyPair", &self.region, Some(name)))?;
        Ok(())
    }

    /// The security groups that carry the tag `key`; the resource's name is
    /// the group's name.
    pub async fn security_groups_tagged(&self, key: &str) -> Result<Vec<Resource>, Error> {
        let mut pages = self
            .client
            .describe_security_groups()
            .filters(Filter::builder().name("tag-key").values(key).build())
            .into_paginator()
            .items()
            .send();
        let mut out = Vec::new();
        while let Some(g) = pages.next().await {
            let g = g.map_err(err("DescribeSecurityGroups", &self.region, None))?;
            out.push(Resource {
                id: g.group_id().unwrap_or_default().to_string(),
                name: g.group_name().unwrap_or_default().to_string(),
                state: String::new(),
                created: None,
                tags: tag_map(g.tags()),
                uses: Vec::new(),
            });
        }
        Ok(out)
    }

    /// Deletes a security group.
    pub async fn delete_security_group(&self, id: &str) -> Result<(), Error> {
        self.client
            .delete_security_group()
            .group_id(id)
            .send()
            .await
            .map_err(err("DeleteSecurityGroup", &self.region, Some(id)))?;
        Ok(())
    }

    /// The launch template `name` with its versions, if it exists.
    pub async fn launch_template(&self, name: &str) -> Result<Option<LaunchTemplate>, Error> {
        let out = self
            .client
            .describe_launch_templates()
            .launch_template_names(name)
            .send()
            .await;
        let out = match out {
            Ok(o) => o,
            Err(e) => {
                let code = e
                    .as_service_error()
                    .and_then(|s| ProvideErrorMetadata::code(s).map(String::from));
                if code.as_deref().is_some_and(|c| c.contains("NotFound")) {
                    return Ok(None);
                }
                return Err(Error::new(
                    "DescribeLaunchTemplates",
                    &self.region,
                    Some(name),
                    e,
                ));
            }
        };
        let Some(lt) = out.launch_templates().first() else {
            return Ok(None);
        };
        let mut images = BTreeMap::new();
        let mut pages = self
            .client
            .describe_launch_template_versions()
            .launch_template_name(name)
            .into_paginator()
            .items()
            .send();
        while let Some(v) = pages.next().await {
            let v = v.map_err(err(
                "DescribeLaunchTemplateVersions",
                &self.region,
                Some(name),
            ))?;
            let image = v
                .launch_template_data()
                .and_then(|d| d.image_id())
                .unwrap_or_default()
                .to_string();
            images.insert(v.version_number().unwrap_or_default(), image);
        }
        Ok(Some(LaunchTemplate {
            name: name.to_string(),
            default_version: lt.default_version_number().unwrap_or_default(),
            latest_version: lt.latest_version_number().unwrap_or_default(),
            images,
        }))
    }

    /// Adds a version with `image` (and IMDSv2 required) on top of version
    /// `source` (the latest, by number rather than `$Latest`: a version
    /// added meanwhile is then not silently built upon), makes it the
    /// default, and returns its number.
    ///
    /// The request carries a client token derived from the template, the
    /// source version, the image and the description. Without one, EC2
    /// makes up a token per request, so a retry after an answer lost on
    /// the way back (a 500 or a dropped connection after EC2 acted) adds a
    /// second version; with it, EC2 answers the retry, and a run repeated
    /// before anything else changed the template, with the version the
    /// first request made.
    pub async fn launch_template_publish(
        &self,
        name: &str,
        source: i64,
        image: &str,
        description: &str,
    ) -> Result<i64, Error> {
        let metadata = LaunchTemplateInstanceMetadataOptionsRequest::builder()
            .http_tokens(LaunchTemplateHttpTokensState::Required)
            .http_endpoint(LaunchTemplateInstanceMetadataEndpointState::Enabled)
            .http_put_response_hop_limit(1)
            .build();
        let data = RequestLaunchTemplateData::builder()
            .image_id(image)
            .metadata_options(metadata)
            .build();
        let out = self
            .client
            .create_launch_template_version()
            .client_token(launch_template_token(name, source, image, description))
            .launch_template_name(name)
            .source_version(source.to_string())
            .version_description(description)
            .launch_template_data(data)
            .send()
            .await
            .map_err(err("CreateLaunchTemplateVersion", &self.region, Some(name)))?;
        let version = out
            .launch_template_version()
            .and_then(|v| v.version_number())
            .unwrap_or_default();
        self.launch_template_default(name, version).await?;
        Ok(version)
    }

    /// Makes `version` the default version of launch template `name`.
    pub async fn launch_template_default(&self, name: &str, version: i64) -> Result<(), Error> {
        self.client
            .modify_launch_template()
            .launch_template_name(name)
            .default_version(version.to_string())
            .send()
            .await
            .map_err(err("ModifyLaunchTemplate", &self.region, Some(name)))?;
        Ok(())
    }
}

/// The client token of the launch template version that puts `image` on
/// top of version `source` of template `name`, described as `description`:
/// 64 hex digits (EC2 allows up to 128 ASCII characters), the same for the
/// same request and only for it (EC2 refuses a token reused with other
/// parameters).
fn launch_template_token(name: &str, source: i64, image: &str, description: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!(
        "imagectl launch template\0{name}\0{source}\0{image}\0{description}"
    ));
    crate::hash::hex(&digest)
}

/// SSM Parameter Store in one region.
#[derive(Debug, Clone)]
pub struct Ssm {
    client: aws_sdk_ssm::Client,
    /// The region.
    pub region: String,
}

/// One version of a parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamVersion {
    /// Version number, from 1.
    pub version: i64,
    /// The value.
    pub value: String,
}

impl Ssm {
    /// The current value, or `None` when the parameter does not exist.
    pub async fn get(&self, name: &str) -> Result<Option<String>, Error> {
        match self.client.get_parameter().name(name).send().await {
            Ok(out) => Ok(out.parameter().and_then(|p| p.value()).map(String::from)),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_parameter_not_found()) =>
            {
                Ok(None)
            }
            Err(e) => Err(Error::new("GetParameter", &self.region, Some(name), e)),
        }
    }

    /// The current value with its version, or `None` when the parameter
    /// does not exist.
    pub async fn current(&self, name: &str) -> Result<Option<ParamVersion>, Error> {
        match self.client.get_parameter().name(name).send().await {
            Ok(out) => Ok(out.parameter().map(|p| ParamVersion {
                version: p.version(),
                value: p.value().unwrap_or_default().to_string(),
            })),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_parameter_not_found()) =>
            {
                Ok(None)
            }
            Err(e) => Err(Error::new("GetParameter", &self.region, Some(name), e)),
        }
    }

    /// Writes an AMI ID as a channel value: a String with data type
    /// `aws:ec2:image`, so EC2 can resolve it in launch templates.
    pub async fn put_image_id(&self, name: &str, ami: &str) -> Result<i64, Error> {
        let out = self
            .client
            .put_parameter()
            .name(name)
            .value(ami)
            .r#type(ParameterType::String)
            .data_type("aws:ec2:image")
            .overwrite(true)
            .send()
            .await
            .map_err(err("PutParameter", &self.region, Some(name)))?;
        Ok(out.version())
    }

    /// The values of the parameters that exist among `names` (ten per call,
    /// the most GetParameters takes).
    pub async fn get_many(&self, names: &[String]) -> Result<BTreeMap<String, String>, Error> {
        let mut out = BTreeMap::new();
        for chunk in names.chunks(10) {
            let res = self
                .client
                .get_parameters()
                .set_names(Some(chunk.to_vec()))
                .send()
                .await
                .map_err(err(
                    "GetParameters",
                    &self.region,
                    chunk.first().map(String::as_str),
                ))?;
            for p in res.parameters() {
                out.insert(
                    p.name().unwrap_or_default().to_string(),
                    p.value().unwrap_or_default().to_string(),
                );
            }
        }
        Ok(out)
    }

    /// Writes a plain String parameter (Intelligent-Tiering: advanced only
    /// when it outgrows the standard tier's 4 KB).
    pub async fn put_string(&self, name: &str, value: &str) -> Result<(), Error> {
        self.client
            .put_parameter()
            .name(name)
            .value(value)
            .r#type(ParameterType::String)
            .tier(aws_sdk_ssm::types::ParameterTier::IntelligentTiering)
            .overwrite(true)
            .send()
            .await
            .map_err(err("PutParameter", &self.region, Some(name)))?;
        Ok(())
    }

    /// Every version of a parameter, oldest first; empty when it does not exist.
    pub async fn history(&self, name: &str) -> Result<Vec<ParamVersion>, Error> {
        let mut pages = self
            .client
            .get_parameter_history()
            .name(name)
            .into_paginator()
            .send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            match page {
                Ok(page) => out.extend(page.parameters().iter().map(|p| ParamVersion {
                    version: p.version(),
                    value: p.value().unwrap_or_default().to_string(),
                })),
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|s| s.is_parameter_not_found()) =>
                {
                    return Ok(Vec::new())
                }
                Err(e) => {
                    return Err(Error::new(
                        "GetParameterHistory",
                        &self.region,
                        Some(name),
                        e,
                    ))
                }
            }
        }
        out.sort_by_key(|p| p.version);
        Ok(out)
    }

    /// Every parameter below `path`, recursively: name → value.
    pub async fn by_path(&self, path: &str) -> Result<BTreeMap<String, String>, Error> {
        let mut pages = self
            .client
            .get_parameters_by_path()
            .path(path)
            .recursive(true)
            .into_paginator()
            .send();
        let mut out = BTreeMap::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(err("GetParametersByPath", &self.region, Some(path)))?;
            for p in page.parameters() {
                out.insert(
                    p.name().unwrap_or_default().to_string(),
                    p.value().unwrap_or_default().to_string(),
                );
            }
        }
        Ok(out)
    }
}

/// A runtime for one command's AWS calls.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

/// The EC2 endpoint override in effect (`AWS_ENDPOINT_URL_EC2`, then
/// `AWS_ENDPOINT_URL`), if any.
pub fn ec2_endpoint_override() -> Option<String> {
    ["AWS_ENDPOINT_URL_EC2", "AWS_ENDPOINT_URL"]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
}

/// Whether an endpoint URL names this machine (an emulator such as moto or
/// LocalStack). Real AWS endpoints, VPC endpoints included, never do.
pub fn is_loopback_endpoint(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let authority = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        authority.split(':').next().unwrap_or("")
    };
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    host.parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_launch_template_token_is_the_same_for_the_same_request_only() {
        let token = |name, source, image, description| {
            launch_template_token(name, source, image, description)
        };
        let first = token(
            "app-prod",
            3,
            "ami-0123456789abcdef0",
            "imagectl:app:prod:0123",
        );
        assert_eq!(first.len(), 64);
        assert!(first.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(
            first,
            token(
                "app-prod",
                3,
                "ami-0123456789abcdef0",
                "imagectl:app:prod:0123"
            )
        );
        // The same image on a template that has changed since, another
        // template, image or description: each a new request.
        for other in [
            token(
                "app-prod",
                4,
                "ami-0123456789abcdef0",
                "imagectl:app:prod:0123",
            ),
            token(
                "app-dev",
                3,
                "ami-0123456789abcdef0",
                "imagectl:app:prod:0123",
            ),
            token(
                "app-prod",
                3,
                "ami-0123456789abcdef1",
                "imagectl:app:prod:0123",
            ),
            token(
                "app-prod",
                3,
                "ami-0123456789abcdef0",
                "imagectl:app:dev:0123",
            ),
        ] {
            assert_ne!(first, other);
        }
    }

    #[test]
    fn an_unreadable_answer_is_quoted_briefly_on_one_line() {
        assert_eq!(
            excerpt(b"<?xml version=\"1.0\"?>\n  <ErrorResponse>\r\n\t<Code>AccessDenied</Code>"),
            "<?xml version=\"1.0\"?> <ErrorResponse> <Code>AccessDenied</Code>"
        );
        let long = excerpt("é".repeat(1000).as_bytes());
        assert_eq!(long.chars().count(), 303);
        assert!(long.ends_with("..."));
        assert_eq!(excerpt(b"\xff\x00ok"), "\u{fffd} ok");
    }

    #[test]
    fn the_attempt_timeout_is_overridable_within_reason() {
        let secs = |v| attempt_timeout_from(v).map(|d| d.as_secs());
        assert_eq!(secs(None), Ok(60));
        assert_eq!(secs(Some(" ")), Ok(60));
        assert_eq!(secs(Some("2")), Ok(2));
        for bad in ["0", "3601", "1.5", "soon"] {
            let e = secs(Some(bad)).unwrap_err();
            assert!(
                e.starts_with(&format!("`IMAGECTL_AWS_ATTEMPT_TIMEOUT={bad}` is not")),
                "{e}"
            );
        }
    }

    #[test]
    fn the_retry_bound_is_overridable_within_reason() {
        assert_eq!(max_attempts_from(None), Ok(DEFAULT_MAX_ATTEMPTS));
        assert_eq!(max_attempts_from(Some("")), Ok(DEFAULT_MAX_ATTEMPTS));
        assert_eq!(max_attempts_from(Some("3")), Ok(3));
        assert_eq!(max_attempts_from(Some(" 12 ")), Ok(12));
        for bad in ["0", "51", "-1", "many"] {
            let e = max_attempts_from(Some(bad)).unwrap_err();
            assert!(
                e.starts_with(&format!("`AWS_MAX_ATTEMPTS={bad}` is not a number")),
                "{e}"
            );
        }
    }

    #[test]
    fn only_this_machine_is_an_emulator() {
        for url in [
            "http://127.0.0.1:5000",
            "http://localhost:4566/",
            "http://[::1]:5000",
            "http://127.8.9.1",
            "https://user@127.0.0.1:1/x",
        ] {
            assert!(is_loopback_endpoint(url), "{url}");
        }
        for url in [
            "https://ec2.eu-west-1.amazonaws.com",
            "https://vpce-0123-abcd.ec2.eu-west-1.vpce.amazonaws.com",
            "http://10.0.0.5:5000",
            "http://127.0.0.1.example.com",
            "http://localhost.evil.com",
        ] {
            assert!(!is_loopback_endpoint(url), "{url}");
        }
    }
}
