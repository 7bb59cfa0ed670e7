//! What differs between two images of a role, from their inventories:
//! packages added, removed, upgraded and downgraded (ordered as dpkg orders
//! versions), baked files, boot templates and release archives changed,
//! and, when both builds' inputs are known, why: the input-level reasons
//! `plan` gives.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use serde::Serialize;

use super::{version, Archive, BakedFile, Inventory, Package, PackagesFrom};
use crate::record::Kind;

/// One side of a diff.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Side {
    /// What was asked for (a hash prefix, a path, an AMI, a channel).
    pub name: String,
    /// The image's content hash.
    pub hash: String,
    /// The kind of image.
    pub target: Kind,
    /// Where its packages were read.
    pub packages_from: PackagesFrom,
}

/// A package present on one side only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Only {
    /// Its name.
    pub name: String,
    /// Its version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Its architecture.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arch: Option<String>,
}

/// A package on both sides in different versions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Moved {
    /// Its name.
    pub name: String,
    /// Its architecture.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arch: Option<String>,
    /// The version in the first image (`None`: not pinned).
    pub from: Option<String>,
    /// The version in the second.
    pub to: Option<String>,
}

/// How the packages differ.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Packages {
    /// In the second image only.
    pub added: Vec<Only>,
    /// In the first image only.
    pub removed: Vec<Only>,
    /// Newer in the second image.
    pub upgraded: Vec<Moved>,
    /// Older in the second image.
    pub downgraded: Vec<Moved>,
    /// A declared package pinned on one side only.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub repinned: Vec<Moved>,
}

/// A file, template or archive that differs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Changed {
    /// Its path in the image (a file or template) or in `roles/` (an
    /// archive).
    pub path: String,
    /// `added`, `removed` or `changed`.
    pub change: &'static str,
    /// For `changed`: what (`content`, `mode 0644 -> 0600`, ...).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub what: Vec<String>,
}

/// Everything that differs between two images of a role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diff {
    /// The role.
    pub role: String,
    /// The first image.
    pub from: Side,
    /// The second image.
    pub to: Side,
    /// Packages.
    pub packages: Packages,
    /// Baked files other than boot templates.
    pub files: Vec<Changed>,
    /// Boot templates: their bytes, or where and how they are rendered.
    pub templates: Vec<Changed>,
    /// Release archives; `None` when one side does not know its own.
    pub archives: Option<Vec<Changed>>,
    /// What changed in the inputs, in `plan`'s words, when both builds'
    /// inputs are known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reasons: Option<Vec<String>>,
}

impl Diff {
    /// Whether the images differ in anything they hold.
    pub fn differs(&self) -> bool {
        let p = &self.packages;
        !(p.added.is_empty()
            && p.removed.is_empty()
            && p.upgraded.is_empty()
            && p.downgraded.is_empty()
            && p.repinned.is_empty()
            && self.files.is_empty()
            && self.templates.is_empty()
            && self.archives.as_ref().is_none_or(Vec::is_empty))
    }
}

fn only(p: &Package) -> Only {
    Only {
        name: p.name.clone(),
        version: p.version.clone(),
        arch: p.arch.clone(),
    }
}

fn packages(a: &[Package], b: &[Package]) -> Packages {
    let key = |p: &Package| (p.name.clone(), p.arch.clone());
    let old: BTreeMap<_, &Package> = a.iter().map(|p| (key(p), p)).collect();
    let new: BTreeMap<_, &Package> = b.iter().map(|p| (key(p), p)).collect();
    let mut out = Packages::default();
    for (k, p) in &old {
        if !new.contains_key(k) {
            out.removed.push(only(p));
        }
    }
    for (k, p) in &new {
        let Some(o) = old.get(k) else {
            out.added.push(only(p));
            continue;
        };
        let moved = || Moved {
            name: p.name.clone(),
            arch: p.arch.clone(),
            from: o.version.clone(),
            to: p.version.clone(),
        };
        match (&o.version, &p.version) {
            (Some(x), Some(y)) => match version::compare(x, y) {
                Ordering::Less => out.upgraded.push(moved()),
                Ordering::Greater => out.downgraded.push(moved()),
                Ordering::Equal => {}
            },
            (None, None) => {}
            _ => out.repinned.push(moved()),
        }
    }
    out
}

/// What differs between two versions of one file.
fn file_changes(a: &BakedFile, b: &BakedFile) -> Vec<String> {
    let mut what = Vec::new();
    if a.sha256 != b.sha256 {
        what.push("content".to_string());
    }
    if a.mode != b.mode {
        what.push(format!("mode {} -> {}", a.mode, b.mode));
    }
    if (&a.owner, &a.group) != (&b.owner, &b.group) {
        what.push(format!(
            "owner {}:{} -> {}:{}",
            a.owner, a.group, b.owner, b.group
        ));
    }
    match (&a.template, &b.template) {
        (Some(x), Some(y)) => {
            if x.dest != y.dest {
                what.push(format!("rendered to {} -> {}", x.dest, y.dest));
            }
            if x.mode != y.mode {
                what.push(format!("rendering's mode {} -> {}", x.mode, y.mode));
            }
            if (&x.owner, &x.group) != (&y.owner, &y.group) {
                what.push(format!(
                    "rendering's owner {}:{} -> {}:{}",
                    x.owner, x.group, y.owner, y.group
                ));
            }
        }
        (None, None) => {}
        _ => what.push("boot template or not".to_string()),
    }
    what
}

/// Changes of keyed items: `what` says what differs in an item on both
/// sides (nothing: unchanged).
fn keyed<T>(
    a: &[T],
    b: &[T],
    key: impl Fn(&T) -> String,
    what: impl Fn(&T, &T) -> Vec<String>,
) -> Vec<Changed> {
    let old: BTreeMap<String, &T> = a.iter().map(|x| (key(x), x)).collect();
    let new: BTreeMap<String, &T> = b.iter().map(|x| (key(x), x)).collect();
    let mut paths: Vec<&String> = old.keys().chain(new.keys()).collect();
    paths.sort();
    paths.dedup();
    paths
        .into_iter()
        .filter_map(|p| {
            let (change, what) = match (old.get(p), new.get(p)) {
                (Some(_), None) => ("removed", Vec::new()),
                (None, Some(_)) => ("added", Vec::new()),
                (Some(x), Some(y)) => {
                    let w = what(x, y);
                    if w.is_empty() {
                        return None;
                    }
                    ("changed", w)
                }
                (None, None) => return None,
            };
            Some(Changed {
                path: p.clone(),
                change,
                what,
            })
        })
        .collect()
}

fn archive_changes(a: &Archive, b: &Archive) -> Vec<String> {
    let mut what = Vec::new();
    if a.sha256 != b.sha256 {
        what.push("content".to_string());
    }
    if a.dest != b.dest {
        what.push(format!("unpacked to {} -> {}", a.dest, b.dest));
    }
    if (&a.owner, &a.group) != (&b.owner, &b.group) {
        what.push(format!(
            "owner {}:{} -> {}:{}",
            a.owner, a.group, b.owner, b.group
        ));
    }
    if a.link != b.link {
        let l = |l: &Option<String>| l.clone().unwrap_or_else(|| "(none)".into());
        what.push(format!("link {} -> {}", l(&a.link), l(&b.link)));
    }
    what
}

/// What differs from image `a` (asked for as `a_name`) to image `b`;
/// `reasons` are the input-level changes between their builds, when known.
pub fn diff(
    (a_name, a): (&str, &Inventory),
    (b_name, b): (&str, &Inventory),
    reasons: Option<Vec<String>>,
) -> Diff {
    let side = |name: &str, i: &Inventory| Side {
        name: name.to_string(),
        hash: i.hash.clone(),
        target: i.target,
        packages_from: i.packages_from,
    };
    let (a_templates, a_files): (Vec<BakedFile>, Vec<BakedFile>) =
        a.files.iter().cloned().partition(|f| f.template.is_some());
    let (b_templates, b_files): (Vec<BakedFile>, Vec<BakedFile>) =
        b.files.iter().cloned().partition(|f| f.template.is_some());
    let path = |f: &BakedFile| f.path.clone();
    Diff {
        role: b.role.clone(),
        from: side(a_name, a),
        to: side(b_name, b),
        packages: packages(&a.packages, &b.packages),
        files: keyed(&a_files, &b_files, path, file_changes),
        templates: keyed(&a_templates, &b_templates, path, file_changes),
        archives: match (&a.archives, &b.archives) {
            (Some(x), Some(y)) => Some(keyed(x, y, |x| x.source.clone(), archive_changes)),
            _ => None,
        },
        reasons,
    }
}

/// A side as the head line shows it: short hash, target, and the name it
/// was asked by unless that is the hash.
fn side_text(s: &Side) -> String {
    let name = if s.name.is_empty() || s.hash.starts_with(&s.name) {
        String::new()
    } else {
        format!(", {}", s.name)
    };
    format!(
        "{} ({}{name})",
        crate::hash::short(&s.hash),
        s.target.as_str()
    )
}

/// The packages' section: a count line, then one aligned row per package
/// (sign, name, version or `from -> to`, architecture).
fn packages_text(p: &Packages, out: &mut String) {
    out.push_str(&format!(
        "packages: {} added, {} removed, {} upgraded, {} downgraded\n",
        p.added.len(),
        p.removed.len(),
        p.upgraded.len(),
        p.downgraded.len()
    ));
    let v = |v: &Option<String>| v.clone().unwrap_or_else(|| "(any)".into());
    let mut rows: Vec<(char, &str, String, Option<&str>)> = Vec::new();
    for (sign, list) in [('+', &p.added), ('-', &p.removed)] {
        rows.extend(
            list.iter()
                .map(|o| (sign, o.name.as_str(), v(&o.version), o.arch.as_deref())),
        );
    }
    for (sign, list) in [('^', &p.upgraded), ('v', &p.downgraded), ('~', &p.repinned)] {
        rows.extend(list.iter().map(|m| {
            let versions = format!("{} -> {}", v(&m.from), v(&m.to));
            (sign, m.name.as_str(), versions, m.arch.as_deref())
        }));
    }
    let name_width = rows.iter().map(|r| r.1.len()).max().unwrap_or(0);
    let version_width = rows.iter().map(|r| r.2.len()).max().unwrap_or(0);
    for (sign, name, versions, arch) in rows {
        let line = match arch {
            Some(a) => format!("  {sign} {name:<name_width$}  {versions:<version_width$}  {a}"),
            None => format!("  {sign} {name:<name_width$}  {versions}"),
        };
        out.push_str(line.trim_end());
        out.push('\n');
    }
}

/// A section of files, templates or archives: a count line, then one line
/// per change.
fn changed_text(title: &str, list: &[Changed], out: &mut String) {
    if list.is_empty() {
        out.push_str(&format!("{title}: none changed\n"));
        return;
    }
    out.push_str(&format!("{title}: {} changed\n", list.len()));
    for c in list {
        let sign = match c.change {
            "added" => '+',
            "removed" => '-',
            _ => '~',
        };
        if c.what.is_empty() {
            out.push_str(&format!("  {sign} {}\n", c.path));
        } else {
            out.push_str(&format!("  {sign} {}: {}\n", c.path, c.what.join(", ")));
        }
    }
}

/// The diff for people: a head line, then one section per kind of change,
/// one line per change, then the reasons.
pub fn text(d: &Diff) -> String {
    let mut out = format!(
        "{}: {} -> {}\n",
        d.role,
        side_text(&d.from),
        side_text(&d.to)
    );
    if d.from.packages_from != d.to.packages_from {
        out.push_str("note: one side lists every installed package, the other only the role's [packages] apt list\n");
    }
    packages_text(&d.packages, &mut out);
    changed_text("files", &d.files, &mut out);
    changed_text("templates", &d.templates, &mut out);
    match &d.archives {
        Some(a) => changed_text("archives", a, &mut out),
        None => out.push_str(
            "archives: not known for both images (an SBOM made from a tarball alone has none)\n",
        ),
    }
    match &d.reasons {
        Some(r) if r.is_empty() => out.push_str("inputs: the same\n"),
        Some(r) => {
            out.push_str("inputs (as plan says it):\n");
            for reason in r {
                out.push_str(&format!("  {reason}\n"));
            }
        }
        None => out.push_str("inputs: not known for both builds\n"),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sbom::spdx::tests::inventory;

    fn pkg(name: &str, version: &str) -> Package {
        Package {
            name: name.into(),
            version: Some(version.into()),
            arch: Some("amd64".into()),
            source: None,
            license: None,
        }
    }

    #[test]
    fn packages_files_templates_and_archives() {
        let a = inventory();
        let mut b = a.clone();
        b.hash = "cd".repeat(32);
        b.packages = vec![
            pkg("jq", "1.6-2.1"),
            pkg("libjq1", "1.6-2.1~deb12u1"),
            pkg("libonig5", "6.9.8-1"),
        ];
        b.files[1].sha256 = "7".repeat(64);
        b.files[1].mode = "0600".into();
        b.files[0].template.as_mut().unwrap().dest = "/etc/learn/worker.env".into();
        b.archives.as_mut().unwrap()[0].sha256 = "8".repeat(64);
        b.files.push(BakedFile {
            path: "/etc/learn/extra.conf".into(),
            ..a.files[1].clone()
        });
        let d = diff(
            ("abab", &a),
            ("cdcd", &b),
            Some(vec!["packages.apt + jq".into()]),
        );
        assert!(d.differs());
        assert_eq!(
            text(&d),
            "\
worker: abababababab (local) -> cdcdcdcdcdcd (local)
packages: 2 added, 1 removed, 0 upgraded, 1 downgraded
  + jq          1.6-2.1                     amd64
  + libonig5    6.9.8-1                     amd64
  - libstdc++6  12.2.0-14+deb12u1           amd64
  v libjq1      1.6-2.1 -> 1.6-2.1~deb12u1  amd64
files: 2 changed
  + /etc/learn/extra.conf
  ~ /etc/systemd/system/sidekiq.service: content, mode 0644 -> 0600
templates: 1 changed
  ~ /etc/imagectl/templates/templates/worker/sidekiq.env.hbs: rendered to /etc/learn/sidekiq.env -> /etc/learn/worker.env
archives: 1 changed
  ~ roles/releases/learn-sample.tar.gz: content
inputs (as plan says it):
  packages.apt + jq
"
        );
        let same = diff(("a", &a), ("a", &a), None);
        assert!(!same.differs());
        assert!(text(&same).ends_with(
            "files: none changed\ntemplates: none changed\narchives: none changed\ninputs: not known for both builds\n"
        ));
    }
}
