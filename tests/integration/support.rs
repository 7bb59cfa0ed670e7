//! A builder for running the real `imagectl` binary in a temporary project.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root (where `Cargo.toml` is).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The `imagectl-agent` binary, built once per test run next to `imagectl`
/// (cargo builds only the tested package's binaries for its tests).
pub fn agent_bin() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            cargo(
                &repo_root(),
                &[
                    "build",
                    "--quiet",
                    "-p",
                    "imagectl-agent",
                    "--bin",
                    "imagectl-agent",
                ],
            );
            target_dir().join("debug/imagectl-agent")
        })
        .clone()
}

/// The target directory the tests' binaries are in (`target/`).
pub fn target_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_imagectl"))
        .parent()
        .and_then(Path::parent)
        .expect("target/debug/imagectl")
        .to_path_buf()
}

/// `cargo` with `args`, run from `dir` into the tests' target directory;
/// panics with its output when it fails.
pub fn cargo(dir: &Path, args: &[&str]) {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .args(args)
        .arg("--target-dir")
        .arg(target_dir())
        .current_dir(dir)
        .output()
        .expect("run cargo");
    assert!(
        out.status.success(),
        "cargo {args:?} in {} failed:\n{}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The `imagectl-agent` binary built from this checkout with cargo
/// profile `profile` (`release`, `release-agent`), as CI and people build
/// it: `cargo build --profile PROFILE -p imagectl-agent`.
pub fn agent_built_with(profile: &str) -> PathBuf {
    cargo(
        &repo_root(),
        &[
            "build",
            "--quiet",
            "--profile",
            profile,
            "-p",
            "imagectl-agent",
            "--bin",
            "imagectl-agent",
        ],
    );
    target_dir().join(profile).join("imagectl-agent")
}

/// A real `imagectl-agent` built from other sources: this checkout's agent
/// with one comment added, built in a copy of its crates (its binary named
/// `imagectl-agent-other`, so that it replaces nothing in the target
/// directory).
pub fn foreign_agent() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let tmp = tempfile::tempdir().unwrap();
            let dir = tmp.path();
            for c in ["agent", "crates/image"] {
                copy_tree(&repo_root().join(c), &dir.join(c));
            }
            std::fs::copy(repo_root().join("Cargo.lock"), dir.join("Cargo.lock")).unwrap();
            // The workspace's own settings, so that the dependencies built
            // for the other tests are reused.
            std::fs::write(
                dir.join("Cargo.toml"),
                "[workspace]\nmembers = [\"agent\", \"crates/image\"]\nresolver = \"2\"\n\n\
                 [workspace.package]\nedition = \"2021\"\nlicense = \"Apache-2.0\"\nrust-version = \"1.88\"\n\n\
                 [profile.dev.package.\"*\"]\ndebug = false\n",
            )
            .unwrap();
            let manifest = dir.join("agent/Cargo.toml");
            let text = std::fs::read_to_string(&manifest).unwrap().replace(
                "name = \"imagectl-agent\"\npath = \"src/main.rs\"",
                "name = \"imagectl-agent-other\"\npath = \"src/main.rs\"",
            );
            assert!(text.contains("imagectl-agent-other"), "the [[bin]] of agent/Cargo.toml moved");
            std::fs::write(&manifest, text).unwrap();
            let main = dir.join("agent/src/main.rs");
            let mut code = std::fs::read_to_string(&main).unwrap();
            code.push_str("\n// Built from other sources.\n");
            std::fs::write(&main, code).unwrap();
            cargo(dir, &["build", "--quiet", "-p", "imagectl-agent", "--bin", "imagectl-agent-other"]);
            target_dir().join("debug/imagectl-agent-other")
        })
        .clone()
}

/// Copies a directory tree, keeping symlinks as symlinks.
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let (src, dst) = (e.path(), to.join(e.file_name()));
        let ft = e.file_type().unwrap();
        if ft.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&src).unwrap(), &dst).unwrap();
        } else if ft.is_dir() {
            copy_tree(&src, &dst);
        } else {
            std::fs::copy(&src, &dst).unwrap();
        }
    }
}

/// One run of the binary in a throwaway project.
pub struct Test {
    pub dir: tempfile::TempDir,
    args: Vec<String>,
    cwd: PathBuf,
    env: Vec<(String, String)>,
    unset: Vec<String>,
}

/// What a run printed and how it ended.
pub struct Run {
    pub stdout: String,
    pub stderr: String,
    pub status: i32,
}

impl Test {
    /// A copy of `tests/fixtures/project`.
    pub fn new() -> Test {
        Test::from_tree(&repo_root().join("tests/fixtures/project"))
    }

    /// A copy of the repository's own `imagectl.toml` and `roles/`.
    pub fn repo() -> Test {
        let t = Test::empty();
        std::fs::copy(repo_root().join("imagectl.toml"), t.path("imagectl.toml")).unwrap();
        copy_tree(&repo_root().join("roles"), &t.path("roles"));
        std::fs::create_dir_all(t.path("images")).unwrap();
        for e in std::fs::read_dir(repo_root().join("images"))
            .unwrap()
            .flatten()
        {
            if e.file_type().unwrap().is_file() {
                std::fs::copy(e.path(), t.path("images").join(e.file_name())).unwrap();
            }
        }
        t
    }

    /// A copy of any tree.
    pub fn from_tree(tree: &Path) -> Test {
        let t = Test::empty();
        copy_tree(tree, t.dir.path());
        t
    }

    /// An empty directory.
    pub fn empty() -> Test {
        let dir = tempfile::tempdir().unwrap();
        let cwd = dir.path().to_path_buf();
        Test {
            dir,
            args: Vec::new(),
            cwd,
            env: Vec::new(),
            unset: Vec::new(),
        }
    }

    /// A path inside the project.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Writes a file, creating its directory.
    pub fn write(self, rel: &str, contents: impl AsRef<[u8]>) -> Test {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, contents).unwrap();
        self
    }

    /// Adds arguments.
    pub fn args(mut self, args: &[&str]) -> Test {
        self.args.extend(args.iter().map(|s| s.to_string()));
        self
    }

    /// Sets environment variables for the run.
    pub fn envs<K: Into<String>, V: Into<String>>(
        mut self,
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> Test {
        self.env
            .extend(vars.into_iter().map(|(k, v)| (k.into(), v.into())));
        self
    }

    /// Runs without environment variable `key` (`IMAGECTL_AGENT_BIN`, say,
    /// which runs otherwise name the agent built for the tests).
    pub fn env_remove(mut self, key: &str) -> Test {
        self.unset.push(key.to_string());
        self
    }

    /// Replaces the arguments.
    pub fn with_args(mut self, args: &[&str]) -> Test {
        self.args = args.iter().map(|s| s.to_string()).collect();
        self
    }

    /// Runs with other arguments, keeping this test's project and environment.
    pub fn run_with(&mut self, args: &[&str]) -> Run {
        self.args = args.iter().map(|s| s.to_string()).collect();
        self.run()
    }

    /// Runs with other arguments and asserts success; returns stdout.
    pub fn ok_with(&mut self, args: &[&str]) -> String {
        self.args = args.iter().map(|s| s.to_string()).collect();
        self.ok()
    }

    /// Runs from a subdirectory of the project.
    pub fn current_dir(mut self, rel: &str) -> Test {
        self.cwd = self.path(rel);
        self
    }

    /// Runs the binary and returns what happened, with the project's
    /// temporary path replaced by `[ROOT]`.
    pub fn run(&self) -> Run {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_imagectl"));
        cmd.args(&self.args)
            .current_dir(&self.cwd)
            .env_remove("RUST_LOG")
            .env("IMAGECTL_AGENT_BIN", agent_bin())
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        for k in &self.unset {
            cmd.env_remove(k);
        }
        let out: Output = cmd.output().unwrap();
        let root = self.dir.path().canonicalize().unwrap();
        let clean = |b: &[u8]| {
            String::from_utf8_lossy(b)
                .replace(&*root.to_string_lossy(), "[ROOT]")
                .replace(&*self.dir.path().to_string_lossy(), "[ROOT]")
        };
        Run {
            stdout: clean(&out.stdout),
            stderr: clean(&out.stderr),
            status: out.status.code().unwrap_or(-1),
        }
    }

    /// Runs and asserts success; returns stdout.
    pub fn ok(&self) -> String {
        let r = self.run();
        assert_eq!(
            r.status, 0,
            "imagectl {:?} failed:\n{}",
            self.args, r.stderr
        );
        r.stdout
    }

    /// The content hash of `role`.
    pub fn hash(&self, role: &str) -> String {
        let out = Command::new(env!("CARGO_BIN_EXE_imagectl"))
            .args(["hash", role])
            .current_dir(self.dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "hash {role}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let s = String::from_utf8(out.stdout).unwrap();
        assert_eq!(s.len(), 65, "one hash and a newline: {s:?}");
        s.trim_end().to_string()
    }
}

/// A `packer` first on PATH (in `dir/bin`) that leaves a mark
/// (`dir/packer-ran`) when it runs: the PATH to use, and the mark.
pub fn marking_packer(dir: &Path) -> (String, std::path::PathBuf) {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let mark = dir.join("packer-ran");
    let script = bin.join("packer");
    std::fs::write(
        &script,
        format!("#!/bin/sh\ntouch '{}'\nexit 1\n", mark.display()),
    )
    .unwrap();
    let mut perms = std::fs::metadata(&script).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&script, perms).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    (path, mark)
}
