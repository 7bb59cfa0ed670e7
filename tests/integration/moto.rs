//! A real AWS API emulator for the tests: moto's server (with its gaps
//! filled, see tests/moto_server.py) on a free loopback port, killed when
//! the handle drops; and boto3, a second client to read results back with.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::repo_root;

/// A running moto server.
pub struct Moto {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    _log: tempfile::NamedTempFile,
}

/// The Python of the venv scripts/setup installs moto and boto3 into.
pub fn python() -> PathBuf {
    let venv = std::env::var_os("IMAGECTL_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_default()
                .join(".cache/imagectl/venv")
        });
    assert!(
        venv.join("bin/moto_server").is_file(),
        "moto is not installed in {}: run scripts/setup",
        venv.display()
    );
    venv.join("bin/python")
}

/// Runs a Python script (in the venv, from the repository root) that
/// prints one JSON document, and returns it.
pub fn python_json(script: &str) -> serde_json::Value {
    let out = Command::new(python())
        .arg("-c")
        .arg(script)
        .current_dir(repo_root())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

impl Moto {
    /// Starts moto with the Debian base image fixture loaded.
    pub fn start() -> Moto {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = tempfile::NamedTempFile::new().unwrap();
        let child = Command::new(python())
            .arg(repo_root().join("tests/moto_server.py"))
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .env(
                "MOTO_AMIS_PATH",
                repo_root().join("tests/fixtures/amis.json"),
            )
            // Instance refreshes advance a step every 0.2 s, not every
            // second (tests/moto_autoscaling.py).
            .env("IMAGECTL_MOTO_REFRESH_STEP_SECS", "0.2")
            .stdout(Stdio::null())
            .stderr(log.reopen().unwrap())
            .spawn()
            .expect("start moto_server");
        let endpoint = format!("http://127.0.0.1:{port}");
        // A hang guard, generous: on a loaded machine Python takes long to import moto.
        let deadline = Instant::now() + Duration::from_secs(120);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "moto_server did not start on port {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Moto {
            child,
            endpoint,
            _log: log,
        }
    }

    /// The environment that points the AWS SDK (and boto3) at this server,
    /// with fake credentials and nothing read from the machine's profiles.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_ACCESS_KEY_ID", "testing".into()),
            ("AWS_SECRET_ACCESS_KEY", "testing".into()),
            ("AWS_EC2_METADATA_DISABLED", "true".into()),
            ("AWS_CONFIG_FILE", "/dev/null".into()),
            ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null".into()),
        ]
    }

    /// Runs a Python script with boto3 against this server: a second AWS
    /// client, so tests do not check imagectl only against itself. The
    /// script prints one JSON document (or nothing).
    pub fn boto3(&self, script: &str) -> serde_json::Value {
        let out = Command::new(python())
            .arg("-c")
            .arg(format!("import boto3, json\n{script}"))
            .envs(self.env())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "boto3 script failed:\n{script}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
    }

    /// Creates what the fixture project's imagectl.toml names.
    pub fn setup_fixture(&self) {
        let script =
            std::fs::read_to_string(repo_root().join("tests/fixtures/aws_setup.py")).unwrap();
        self.boto3(&script);
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The wrapper's own emulation (instance refreshes, lifecycle actions, see
/// tests/moto_autoscaling.py; AMI deprecation and deregistration protection,
/// see tests/moto_server.py) passes its Python tests, which start their own
/// servers and drive them with boto3.
#[test]
fn the_wrappers_own_tests_pass() {
    let tests = [
        "tests/test_moto_autoscaling.py",
        "tests/test_moto_images.py",
    ];
    let out = Command::new(python())
        .args(["-m", "unittest"])
        .args(tests)
        .current_dir(repo_root())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_ENDPOINT_URL")
        .stdin(Stdio::null())
        .output()
        .expect("run the wrapper's Python tests");
    assert!(
        out.status.success(),
        "python -m unittest {} failed ({}):\n{}\n{}",
        tests.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
