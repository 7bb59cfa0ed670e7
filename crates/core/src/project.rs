//! The project: where its root is (the directory holding `imagectl.toml`),
//! its settings, and where its role files and generated files live.

use std::path::{Path, PathBuf};

use crate::diag::Diagnostics;
use crate::settings::{parse_settings, Settings, SETTINGS_FILE};

/// The directory, below the project root, holding role files and everything
/// they reference.
pub const ROLES_DIR: &str = "roles";

/// Errors finding or reading the project.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No `imagectl.toml` in the directory or any parent.
    #[error("could not find `{SETTINGS_FILE}` in `{}` or any parent directory; run imagectl inside a project, or name one with `-C DIR`", .0.display())]
    NotFound(PathBuf),
    /// The directory does not exist or cannot be read.
    #[error("cannot use directory `{}`: {source}", path.display())]
    Dir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The settings file cannot be read.
    #[error("cannot read `{}`: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The settings file is not valid.
    #[error(transparent)]
    Invalid(#[from] Diagnostics),
}

/// A project found on disk.
#[derive(Debug, Clone)]
pub struct Project {
    /// The directory holding `imagectl.toml`.
    pub root: PathBuf,
    /// Its settings.
    pub settings: Settings,
}

impl Project {
    /// Finds the project containing `dir` (walking up as cargo does) and
    /// reads its settings.
    pub fn discover(dir: &Path) -> Result<Project, Error> {
        let start = dir.canonicalize().map_err(|source| Error::Dir {
            path: dir.to_path_buf(),
            source,
        })?;
        let root = start
            .ancestors()
            .find(|d| d.join(SETTINGS_FILE).is_file())
            .ok_or_else(|| Error::NotFound(start.clone()))?
            .to_path_buf();
        let path = root.join(SETTINGS_FILE);
        let text = std::fs::read_to_string(&path).map_err(|source| Error::Read {
            path: path.clone(),
            source,
        })?;
        let settings = parse_settings(&text)?;
        Ok(Project { root, settings })
    }

    /// The directory of the role files.
    pub fn roles_dir(&self) -> PathBuf {
        self.root.join(ROLES_DIR)
    }

    /// The directory of generated, committed files (templates, lock).
    pub fn images_dir(&self) -> PathBuf {
        self.root.join("images")
    }
}

impl Error {
    /// Whether the user fixes it (exit 2): a missing or invalid project, as
    /// opposed to one that cannot be read.
    pub fn is_usage(&self) -> bool {
        !matches!(self, Error::Read { .. })
    }
}
