//! `images/bases.lock`: every base image resolved to an AMI per region, so
//! that builds and hashes never depend on a live lookup. A new base image
//! reaches the images through a reviewed change of this file.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::project::Project;
use crate::settings::{Base, Settings};

/// The lock file, relative to the project root.
pub const LOCK_FILE: &str = "images/bases.lock";

/// Errors reading or using the lock.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// There is no lock yet.
    #[error("`{LOCK_FILE}` does not exist; run `imagectl bases update` to pin the base images")]
    Missing,
    /// The lock is not valid TOML of the expected shape.
    #[error("`{LOCK_FILE}` is not valid: {0}; run `imagectl bases update` to write it anew")]
    Invalid(String),
    /// The lock has no entry for a base in a region.
    #[error("base `{base}` has no entry for region `{region}` in `{LOCK_FILE}`; run `imagectl bases update`")]
    NoEntry {
        /// The base.
        base: String,
        /// The region.
        region: String,
    },
    /// `imagectl.toml` changed the base since the lock was written.
    #[error("base `{0}` changed in `imagectl.toml` since `{LOCK_FILE}` was written; run `imagectl bases update`")]
    Stale(String),
    /// No image matches a base's filter.
    #[error("no available image matches base `{base}` in `{region}` (owners {owners}, name `{name}`, {arch}); check `[bases.{base}]` in imagectl.toml")]
    NoMatch {
        /// The base.
        base: String,
        /// The region.
        region: String,
        /// The owners searched.
        owners: String,
        /// The name pattern.
        name: String,
        /// The architecture.
        arch: String,
    },
    /// The lock could not be written.
    #[error("cannot write `{LOCK_FILE}`: {0}")]
    Write(std::io::Error),
}

impl Error {
    /// Whether the user fixes it (exit 2): by running `imagectl bases
    /// update` or changing `[bases]`; a lock that cannot be written is a
    /// failure.
    pub fn is_usage(&self) -> bool {
        !matches!(self, Error::Write(_))
    }
}

/// One base image in one region.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// The AMI ID.
    pub ami: String,
    /// The image's name.
    pub name: String,
    /// When the image was created, as EC2 says.
    pub created: String,
    /// The `[bases]` entry this was resolved from, to notice a change.
    pub filter: String,
}

/// The whole lock: base name → region → entry, sorted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Lock {
    /// Entries by base, then region.
    pub bases: BTreeMap<String, BTreeMap<String, Entry>>,
}

impl Lock {
    /// Reads the project's lock.
    pub fn load(project: &Project) -> Result<Lock, Error> {
        match std::fs::read_to_string(project.root.join(LOCK_FILE)) {
            Ok(text) => toml::from_str(&text).map_err(|e| Error::Invalid(e.message().to_string())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::Missing),
            Err(e) => Err(Error::Invalid(e.to_string())),
        }
    }

    /// The entry a build of a role on `base` uses: the home region's, and
    /// only while it still matches `imagectl.toml`.
    pub fn resolve(&self, project: &Project, base: &str) -> Result<&Entry, Error> {
        let region = &project.settings.aws.region;
        let entry = self
            .bases
            .get(base)
            .and_then(|r| r.get(region))
            .ok_or_else(|| Error::NoEntry {
                base: base.to_string(),
                region: region.clone(),
            })?;
        match project.settings.bases.get(base) {
            Some(b) if filter_id(b) == entry.filter => Ok(entry),
            _ => Err(Error::Stale(base.to_string())),
        }
    }

    /// The file's text: a header, then TOML sorted by base and region.
    pub fn render(&self) -> String {
        let body = toml::to_string(&self.bases).unwrap_or_default();
        format!(
            "# Base images pinned by `imagectl bases update`; do not edit by hand.\n\
             # A change here is a new base image: review it like code.\n\n{body}"
        )
    }
}

/// A stable one-line description of a `[bases]` entry.
pub fn filter_id(base: &Base) -> String {
    match &base.ami {
        Some(ami) => format!("ami={ami} arch={}", base.architecture.as_str()),
        None => format!(
            "owners={} name={} arch={}",
            base.owners.join(","),
            base.name.as_deref().unwrap_or(""),
            base.architecture.as_str()
        ),
    }
}

/// An image a base may resolve to, as EC2 describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The AMI ID.
    pub id: String,
    /// The image's name.
    pub name: String,
    /// The owning account.
    pub owner: String,
    /// `x86_64` or `arm64`.
    pub arch: String,
    /// Creation date, ISO 8601 in UTC.
    pub created: String,
    /// `available`, `pending`, ...
    pub state: String,
}

/// What to ask EC2 for to resolve every base: one `DescribeImages` by
/// owners and name patterns, one by the pinned IDs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    /// Every owner of a base found by filter, sorted, once each.
    pub owners: Vec<String>,
    /// Every name pattern, sorted, once each.
    pub names: Vec<String>,
    /// Every pinned AMI ID.
    pub pinned: Vec<String>,
}

impl Query {
    /// The query covering every `[bases]` entry.
    pub fn of(settings: &Settings) -> Query {
        let sorted = |mut v: Vec<String>| {
            v.sort();
            v.dedup();
            v
        };
        let bases = || settings.bases.values();
        Query {
            owners: sorted(bases().flat_map(|b| b.owners.clone()).collect()),
            names: sorted(bases().filter_map(|b| b.name.clone()).collect()),
            pinned: bases().filter_map(|b| b.ami.clone()).collect(),
        }
    }
}

/// Adds to `lock` the entry of every base in `region`: the newest available
/// candidate matching its filter (or its pinned ID).
pub fn select(
    settings: &Settings,
    region: &str,
    found: &[Candidate],
    lock: &mut Lock,
) -> Result<(), Error> {
    for (name, base) in &settings.bases {
        let newest = found
            .iter()
            .filter(|i| i.state == "available" && i.arch == base.architecture.as_str())
            .filter(|i| match (&base.ami, &base.name) {
                (Some(ami), _) => &i.id == ami,
                (None, Some(pattern)) => {
                    base.owners.contains(&i.owner) && glob_match(pattern, &i.name)
                }
                (None, None) => false,
            })
            // Creation dates are ISO 8601 in UTC: they sort as text. The ID
            // breaks ties so the choice never depends on API order.
            .max_by(|a, b| (&a.created, &a.id).cmp(&(&b.created, &b.id)));
        match newest {
            Some(i) => {
                lock.bases.entry(name.clone()).or_default().insert(
                    region.to_string(),
                    Entry {
                        ami: i.id.clone(),
                        name: i.name.clone(),
                        created: i.created.clone(),
                        filter: filter_id(base),
                    },
                );
            }
            // A pinned AMI exists in one region only; that is fine for copy
            // regions, which receive copies of the result.
            None if base.ami.is_some() && region != settings.aws.region => {}
            None => {
                return Err(Error::NoMatch {
                    base: name.clone(),
                    region: region.to_string(),
                    owners: base.owners.join(","),
                    name: base.name.clone().or(base.ami.clone()).unwrap_or_default(),
                    arch: base.architecture.as_str().to_string(),
                })
            }
        }
    }
    Ok(())
}

/// EC2 filter wildcards: `*` any run of characters, `?` any one character.
pub fn glob_match(pattern: &str, s: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = s.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match(
            "debian-12-amd64-*",
            "debian-12-amd64-20260901-1234"
        ));
        assert!(!glob_match(
            "debian-12-amd64-*",
            "debian-12-arm64-20260901-1234"
        ));
        assert!(glob_match("a?c*", "abcdef"));
        assert!(glob_match("*", ""));
        assert!(!glob_match("a", "ab"));
        assert!(glob_match("*-1234", "x-y-1234"));
    }

    #[test]
    fn lock_round_trips_sorted() {
        let mut lock = Lock::default();
        for (base, region) in [("z", "eu-west-1"), ("a", "us-east-1"), ("a", "eu-west-1")] {
            lock.bases.entry(base.into()).or_default().insert(
                region.into(),
                Entry {
                    ami: "ami-12345678".into(),
                    name: "n".into(),
                    created: "c".into(),
                    filter: "f".into(),
                },
            );
        }
        let text = lock.render();
        let a = text.find("[a.eu-west-1]").unwrap();
        let b = text.find("[a.us-east-1]").unwrap();
        let c = text.find("[z.eu-west-1]").unwrap();
        assert!(a < b && b < c, "{text}");
        let back: Lock = toml::from_str(&text).unwrap();
        assert_eq!(back, lock);
    }
}
