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
            let bin = PathBuf::from(env!("CARGO_BIN_EXE_imagectl"));
            let target_dir = bin
                .parent()
                .and_then(Path::parent)
                .expect("target/debug/imagectl");
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let status = Command::new(cargo)
                .args([
                    "build",
                    "--quiet",
                    "-p",
                    "imagectl-agent",
                    "--bin",
                    "imagectl-agent",
                    "--target-dir",
                ])
                .arg(target_dir)
                .current_dir(repo_root())
                .status()
                .expect("run cargo build -p imagectl-agent");
            assert!(status.success(), "cargo build -p imagectl-agent failed");
            bin.with_file_name("imagectl-agent")
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
        let out: Output = Command::new(env!("CARGO_BIN_EXE_imagectl"))
            .args(&self.args)
            .current_dir(&self.cwd)
            .env_remove("RUST_LOG")
            .env("IMAGECTL_AGENT_BIN", agent_bin())
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output()
            .unwrap();
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
