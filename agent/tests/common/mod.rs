//! Test fixtures for the boot tests: moto (SSM, EC2, Auto Scaling) on a
//! free port, a small IMDSv2 server, an SSM proxy that throttles or fails,
//! an image root in a temporary directory, and running the agent binary
//! against them.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use imagectl_agent::config::{Boot, BootTemplate, Health, ImageConfig, FORMAT_VERSION};
use imagectl_agent::template::Multiline;

/// A moto server on a free 127.0.0.1 port, killed on drop: the
/// repository's wrapper, `tests/moto_server.py` (moto with the gaps the
/// tests need filled, such as `CompleteLifecycleAction`), run by the
/// venv's Python.
pub struct Moto {
    child: Child,
    pub url: String,
    pub port: u16,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Finds `moto_server`: `PATH`, then `$IMAGECTL_VENV/bin`, then
/// `~/.cache/imagectl/venv/bin` (where scripts/setup installs it).
pub fn moto_server_path() -> PathBuf {
    let mut candidates: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("moto_server"))
                .collect()
        })
        .unwrap_or_default();
    if let Some(v) = std::env::var_os("IMAGECTL_VENV") {
        candidates.push(Path::new(&v).join("bin/moto_server"));
    }
    if let Some(h) = std::env::var_os("HOME") {
        candidates.push(Path::new(&h).join(".cache/imagectl/venv/bin/moto_server"));
    }
    candidates.into_iter().find(|p| p.is_file()).unwrap_or_else(|| {
        panic!(
            "moto_server not found (looked in PATH, $IMAGECTL_VENV/bin, ~/.cache/imagectl/venv/bin): \
             run scripts/setup to install moto"
        )
    })
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `tests/moto_server.py` at the workspace root.
pub fn moto_wrapper() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/moto_server.py")
}

impl Moto {
    pub fn start() -> Moto {
        let python = python_path();
        let bin = moto_wrapper();
        // A free port can be taken between probing and binding: retry.
        for _ in 0..5 {
            let port = free_port();
            let mut child = Command::new(&python)
                .arg(&bin)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| {
                    panic!(
                        "cannot run {} {}: {e}; run scripts/setup",
                        python.display(),
                        bin.display()
                    )
                });
            let until = Instant::now() + Duration::from_secs(30);
            while Instant::now() < until {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if http_get_status(port, "/moto-api/") == Some(200) {
                    return Moto {
                        child,
                        url: format!("http://127.0.0.1:{port}"),
                        port,
                    };
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("{} did not answer on 127.0.0.1", bin.display());
    }

    /// Runs a Python script with boto3 against this moto (`MOTO_URL` in
    /// its environment, region eu-west-1) and returns the JSON it prints.
    pub fn python(&self, script: &str, args: &[&str]) -> serde_json::Value {
        let out = Command::new(python_path())
            .arg("-c")
            .arg(script)
            .args(args)
            .env("MOTO_URL", &self.url)
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_DEFAULT_REGION", "eu-west-1")
            .env_remove("AWS_ENDPOINT_URL")
            .env_remove("AWS_PROFILE")
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run python: {e}"));
        assert!(
            out.status.success(),
            "python failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "python printed no JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    /// An Auto Scaling group `name` of one instance (from a launch
    /// template, with a 300 s health check grace period), with a launch
    /// lifecycle hook `hook` put on it before the instance launches (it
    /// then waits in `Pending:Wait`); returns the instance's ID.
    pub fn auto_scaling_group(&self, name: &str, hook: Option<&str>) -> String {
        let v = self.python(ASG_SCRIPT, &[name, hook.unwrap_or("")]);
        v["instance"]
            .as_str()
            .unwrap_or_else(|| panic!("no instance in {v}"))
            .to_string()
    }

    /// `DescribeAutoScalingInstances` for `instance`, as boto3 reads it:
    /// `{"HealthStatus", "LifecycleState", "AutoScalingGroupName", ...}`,
    /// or null when the instance is in no group.
    pub fn auto_scaling_instance(&self, instance: &str) -> serde_json::Value {
        self.python(
            "import boto3, json, os, sys\n\
             asg = boto3.client('autoscaling', endpoint_url=os.environ['MOTO_URL'])\n\
             found = asg.describe_auto_scaling_instances(InstanceIds=[sys.argv[1]])['AutoScalingInstances']\n\
             print(json.dumps(found[0] if found else None, default=str))\n",
            &[instance],
        )
    }

    /// Puts parameters (`SecureString`) into moto's SSM.
    pub fn put_parameters(&self, params: &[(String, String)]) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let conf = aws_sdk_ssm::Config::builder()
                .behavior_version(aws_sdk_ssm::config::BehaviorVersion::latest())
                .region(aws_sdk_ssm::config::Region::new("eu-west-1"))
                .endpoint_url(&self.url)
                .credentials_provider(aws_sdk_ssm::config::Credentials::new(
                    "testing", "testing", None, None, "test",
                ))
                .build();
            let c = aws_sdk_ssm::Client::from_conf(conf);
            for (name, value) in params {
                c.put_parameter()
                    .name(name)
                    .value(value)
                    .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
                    .overwrite(true)
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("put {name}: {e:?}"));
            }
        });
    }
}

const ASG_SCRIPT: &str = r#"
import boto3, json, os, sys
name, hook = sys.argv[1], sys.argv[2]
url = os.environ["MOTO_URL"]
ec2 = boto3.client("ec2", endpoint_url=url)
asg = boto3.client("autoscaling", endpoint_url=url)
ami = ec2.describe_images()["Images"][0]["ImageId"]
ec2.create_launch_template(
    LaunchTemplateName=name,
    LaunchTemplateData={"ImageId": ami, "InstanceType": "t3.small"},
)
asg.create_auto_scaling_group(
    AutoScalingGroupName=name,
    LaunchTemplate={"LaunchTemplateName": name, "Version": "$Latest"},
    MinSize=0, MaxSize=1, DesiredCapacity=0,
    AvailabilityZones=["eu-west-1b"],
    # A new instance is inside its grace period: only
    # ShouldRespectGracePeriod=false marks it unhealthy.
    HealthCheckType="ELB", HealthCheckGracePeriod=300,
)
if hook:
    asg.put_lifecycle_hook(
        LifecycleHookName=hook, AutoScalingGroupName=name,
        LifecycleTransition="autoscaling:EC2_INSTANCE_LAUNCHING",
        HeartbeatTimeout=600, DefaultResult="ABANDON",
    )
asg.set_desired_capacity(AutoScalingGroupName=name, DesiredCapacity=1)
group = asg.describe_auto_scaling_groups(AutoScalingGroupNames=[name])["AutoScalingGroups"][0]
print(json.dumps({"instance": group["Instances"][0]["InstanceId"]}))
"#;

fn http_get_status(port: u16, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .ok()?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).ok()?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// One HTTP request as the fake servers see it.
pub struct Request {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

pub fn read_request(s: &mut TcpStream) -> Option<Request> {
    let mut r = BufReader::new(s.try_clone().ok()?);
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let path = parts.next()?.to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    r.read_exact(&mut body).ok()?;
    Some(Request {
        method,
        path,
        headers,
        body,
    })
}

pub fn respond(s: &mut TcpStream, status: &str, headers: &[(&str, &str)], body: &[u8]) {
    let mut head = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let _ = s.write_all(head.as_bytes());
    let _ = s.write_all(body);
}

/// A tiny HTTP server on a free port; each connection is one request.
pub struct Server {
    pub port: u16,
    pub hits: Arc<AtomicUsize>,
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    pub fn start(
        handler: impl Fn(&Request, usize) -> (String, Vec<(String, String)>, Vec<u8>)
            + Send
            + Sync
            + 'static,
    ) -> Server {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let hits = Arc::new(AtomicUsize::new(0));
        let log = Arc::new(Mutex::new(Vec::new()));
        let (h2, l2) = (hits.clone(), log.clone());
        let handler = Arc::new(handler);
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { continue };
                let (hits, log, handler) = (h2.clone(), l2.clone(), handler.clone());
                std::thread::spawn(move || {
                    let Some(req) = read_request(&mut s) else {
                        return;
                    };
                    let n = hits.fetch_add(1, Ordering::SeqCst);
                    log.lock().unwrap().push(format!(
                        "{} {} token={}",
                        req.method,
                        req.path,
                        req.header("x-aws-ec2-metadata-token").is_some()
                    ));
                    let (status, headers, body) = handler(&req, n);
                    let headers: Vec<(&str, &str)> = headers
                        .iter()
                        .map(|(k, v)| (k.as_str(), v.as_str()))
                        .collect();
                    respond(&mut s, &status, &headers, &body);
                });
            }
        });
        Server { port, hits, log }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// How the fake IMDS behaves.
#[derive(Clone, Default)]
pub struct ImdsBehaviour {
    /// User data; `None` answers 404 as IMDS does when there is none.
    pub user_data: Option<String>,
    /// Refuse to issue tokens (IMDSv2 unavailable).
    pub refuse_tokens: bool,
    /// The instance ID in the identity document; `None`:
    /// [`INSTANCE_ID`].
    pub instance_id: Option<String>,
    /// Instance metadata tags, `(key, value)`: `None` answers 404 below
    /// `/latest/meta-data/tags/instance`, as IMDS does when the launch
    /// template does not enable them.
    pub tags: Option<Vec<(String, String)>>,
}

/// The instance ID the fake IMDS serves unless told otherwise.
pub const INSTANCE_ID: &str = "i-0abc123def4567890";

pub const TOKEN: &str = "test-imds-token-AQAEA";

/// An IMDSv2 server: `PUT /latest/api/token` with a TTL header gives a
/// token; every GET needs it (401 without).
pub fn imds(b: ImdsBehaviour) -> Server {
    Server::start(move |req, _| {
        let ok = |body: &str| ("200 OK".to_string(), vec![], body.as_bytes().to_vec());
        let status = |s: &str| (s.to_string(), vec![], Vec::new());
        if req.method == "PUT" && req.path == "/latest/api/token" {
            if b.refuse_tokens {
                return status("403 Forbidden");
            }
            let Some(ttl) = req.header("x-aws-ec2-metadata-token-ttl-seconds") else {
                return status("400 Bad Request");
            };
            return (
                "200 OK".to_string(),
                vec![(
                    "X-aws-ec2-metadata-token-ttl-seconds".to_string(),
                    ttl.to_string(),
                )],
                TOKEN.as_bytes().to_vec(),
            );
        }
        if req.method != "GET" {
            return status("405 Method Not Allowed");
        }
        if req.header("x-aws-ec2-metadata-token") != Some(TOKEN) {
            return status("401 Unauthorized");
        }
        let tags = "/latest/meta-data/tags/instance";
        match req.path.as_str() {
            "/latest/dynamic/instance-identity/document" => ok(&format!(
                r#"{{"accountId":"123456789012","architecture":"x86_64","availabilityZone":"eu-west-1b","imageId":"ami-0123","instanceId":"{}","instanceType":"t3.small","pendingTime":"2024-01-01T00:00:00Z","privateIp":"10.0.0.1","region":"eu-west-1","version":"2017-09-30"}}"#,
                b.instance_id.as_deref().unwrap_or(INSTANCE_ID)
            )),
            "/latest/user-data" => match &b.user_data {
                Some(u) => ok(u),
                None => status("404 Not Found"),
            },
            p if p == tags || p.starts_with(&format!("{tags}/")) => {
                let Some(list) = &b.tags else {
                    return status("404 Not Found");
                };
                if p == tags {
                    let keys: Vec<&str> = list.iter().map(|(k, _)| k.as_str()).collect();
                    return ok(&keys.join("\n"));
                }
                let key = &p[tags.len() + 1..];
                match list.iter().find(|(k, _)| k == key) {
                    Some((_, v)) => ok(v),
                    None => status("404 Not Found"),
                }
            }
            _ => status("404 Not Found"),
        }
    })
}

/// An SSM endpoint in front of moto: the first `fail_first` requests get
/// `status` with `error_type`, the rest are forwarded to moto.
pub fn ssm_proxy(
    moto_port: u16,
    fail_first: usize,
    status: &'static str,
    error_type: &'static str,
) -> Server {
    Server::start(move |req, n| {
        if n < fail_first {
            let body = format!(r#"{{"__type":"{error_type}","message":"injected by the test"}}"#);
            return (
                status.to_string(),
                vec![
                    (
                        "Content-Type".to_string(),
                        "application/x-amz-json-1.1".to_string(),
                    ),
                    ("x-amzn-ErrorType".to_string(), error_type.to_string()),
                ],
                body.into_bytes(),
            );
        }
        forward(moto_port, req)
    })
}

/// Sends `req` to 127.0.0.1:`port` and returns its answer, for servers
/// that pass some requests through.
pub fn forward(port: u16, req: &Request) -> (String, Vec<(String, String)>, Vec<u8>) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut head = format!("{} {} HTTP/1.1\r\n", req.method, req.path);
    for (k, v) in &req.headers {
        if !k.eq_ignore_ascii_case("connection") {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
    }
    head.push_str("Connection: close\r\n\r\n");
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(&req.body).unwrap();
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let status = line
        .split_once(' ')
        .map(|x| x.1.trim().to_string())
        .unwrap_or_default();
    let mut headers = Vec::new();
    let mut len = None;
    loop {
        let mut h = String::new();
        r.read_line(&mut h).unwrap();
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            let (k, v) = (k.trim(), v.trim());
            if k.eq_ignore_ascii_case("content-length") {
                len = v.parse().ok();
            } else if !k.eq_ignore_ascii_case("connection")
                && !k.eq_ignore_ascii_case("transfer-encoding")
            {
                headers.push((k.to_string(), v.to_string()));
            }
        }
    }
    let mut body = Vec::new();
    match len {
        Some(n) => {
            body.resize(n, 0);
            r.read_exact(&mut body).unwrap();
        }
        None => {
            r.read_to_end(&mut body).unwrap();
        }
    }
    (status, headers, body)
}

/// An image unpacked in a temporary directory.
pub struct Image {
    pub dir: tempfile::TempDir,
}

pub const LEARN_UID: u32 = 1001;
pub const LEARN_GID: u32 = 1002;

pub fn template(source: &str, dest: &str, mode: &str, owner: &str) -> BootTemplate {
    BootTemplate {
        source: source.to_string(),
        dest: dest.to_string(),
        mode: mode.to_string(),
        owner: owner.to_string(),
        group: owner.to_string(),
        multiline: Multiline::Off,
    }
}

impl Image {
    /// An image for `role` with `templates` (source path, text) and boot
    /// settings.
    pub fn new(boot: Boot, templates: &[(&str, &str)]) -> Image {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("etc/imagectl/templates")).unwrap();
        std::fs::write(
            root.join("etc/passwd"),
            format!("root:x:0:0:root:/root:/bin/sh\nlearn:x:{LEARN_UID}:{LEARN_GID}::/srv/learn:/usr/sbin/nologin\n"),
        )
        .unwrap();
        std::fs::write(
            root.join("etc/group"),
            format!("root:x:0:\nlearn:x:{LEARN_GID}:\n"),
        )
        .unwrap();
        for (source, text) in templates {
            let p = root.join("etc/imagectl/templates").join(source);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        let config = ImageConfig {
            format: FORMAT_VERSION,
            role: "worker".to_string(),
            hash: "ab".repeat(32),
            boot,
            manifest: vec![],
        };
        std::fs::write(
            root.join("etc/imagectl/image.json"),
            serde_json::to_vec_pretty(&config).unwrap(),
        )
        .unwrap();
        // A systemctl that records what it is asked and fails for units
        // named `broken*`.
        let log = root.join("systemctl.log");
        let script = root.join("systemctl");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\necho \"$*\" >> '{}'\ncase \"$*\" in *broken*) echo 'Job for broken.service failed.' >&2; exit 1;; esac\nexit 0\n",
                log.display()
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        Image { dir }
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn path(&self, abs: &str) -> PathBuf {
        self.root().join(abs.trim_start_matches('/'))
    }

    pub fn read(&self, abs: &str) -> String {
        std::fs::read_to_string(self.path(abs)).unwrap_or_else(|e| panic!("{abs}: {e}"))
    }

    pub fn report(&self) -> serde_json::Value {
        serde_json::from_str(&self.read("/run/imagectl/boot.json")).unwrap()
    }

    pub fn systemctl_log(&self) -> String {
        std::fs::read_to_string(self.root().join("systemctl.log")).unwrap_or_default()
    }

    /// A command running the agent with `args` and `--root` this image,
    /// with a clean AWS environment pointing at `imds` and `ssm`.
    pub fn agent(&self, args: &[&str], imds: Option<&str>, ssm: Option<&str>) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_imagectl-agent"));
        c.args(args);
        for (k, _) in std::env::vars() {
            if k.starts_with("AWS_") || k.starts_with("IMAGECTL_AGENT_") {
                c.env_remove(k);
            }
        }
        c.env("HOME", self.root())
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_CONFIG_FILE", self.root().join("no-aws-config"))
            .env(
                "AWS_SHARED_CREDENTIALS_FILE",
                self.root().join("no-aws-credentials"),
            )
            .env("IMAGECTL_AGENT_SYSTEMCTL", self.root().join("systemctl"))
            .env(
                "AWS_EC2_METADATA_SERVICE_ENDPOINT",
                imds.unwrap_or("http://127.0.0.1:9"),
            )
            .env("AWS_ENDPOINT_URL", ssm.unwrap_or("http://127.0.0.1:9"))
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .arg("--root")
            .arg(self.root());
        c
    }
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn health_command(cmd: &str, timeout_secs: u64) -> Option<Health> {
    Some(Health {
        http: None,
        command: Some(cmd.to_string()),
        timeout_secs,
    })
}

/// A port on 127.0.0.1 that nothing listens on: connections are refused.
pub fn closed_port() -> u16 {
    // Bound and dropped: the kernel does not hand it out again at once.
    free_port()
}

/// The Python of the venv moto runs from (for the test helpers in
/// `tests/`), or `python3` from `PATH`.
pub fn python_path() -> PathBuf {
    let venv = moto_server_path().with_file_name("python3");
    if venv.is_file() {
        venv
    } else {
        PathBuf::from("python3")
    }
}

/// `tests/fault_proxy.py` (at the workspace root) in front of an upstream:
/// answers the chosen AWS actions with throttling errors or 500s, logs
/// every request. Killed on drop.
pub struct FaultProxy {
    child: Child,
    pub url: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl FaultProxy {
    /// Starts the proxy in front of `upstream` with `args` (`--actions`,
    /// `--error`, `--first`, `--rate`); `--log` is added here.
    pub fn start(upstream: &str, args: &[&str]) -> FaultProxy {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fault_proxy.py");
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("requests.log");
        for _ in 0..5 {
            let port = free_port();
            let mut child = Command::new(python_path())
                .arg(&script)
                .arg(port.to_string())
                .arg(upstream)
                .args(args)
                .arg("--log")
                .arg(&log)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
            let mut line = String::new();
            let _ = BufReader::new(child.stdout.take().unwrap()).read_line(&mut line);
            if line.trim() == "ready" {
                return FaultProxy {
                    child,
                    url: format!("http://127.0.0.1:{port}"),
                    log,
                    _dir: dir,
                };
            }
            // The port was taken between probing and binding: try another.
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("{} did not start", script.display());
    }

    /// Every request so far, one `"<action> <fault|pass>"` line each.
    pub fn requests(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

/// Whether the tests run as root (mounting needs it).
pub fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").map(|m| m.uid()).ok() == Some(0)
}

/// A tmpfs of `size` bytes mounted on `dir`, unmounted on drop.
pub struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    pub fn mount(dir: &Path, size: usize) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={size},mode=0755"))
            .arg("imagectl-agent-test")
            .arg(dir)
            .output()
            .unwrap_or_else(|e| panic!("cannot run mount: {e}"));
        assert!(
            out.status.success(),
            "mount tmpfs on {}: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs {
            dir: dir.to_path_buf(),
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
    }
}

/// Starts `cmd` with stderr piped and reads its stderr until a line
/// containing `marker`; returns the running child and the lines read.
/// Panics, with what it printed, if the child ends first.
// The child is handed to the caller, who kills and waits for it.
#[allow(clippy::zombie_processes)]
pub fn spawn_until(mut cmd: Command, marker: &str) -> (Child, String) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        if err.read_line(&mut line).unwrap_or(0) == 0 {
            let status = child.wait().unwrap();
            panic!("the agent ended ({status}) before `{marker}`:\n{seen}");
        }
        seen.push_str(&line);
        if line.contains(marker) {
            return (child, seen);
        }
    }
}
