//! The content hash: one SHA-256 over everything that enters an image, and
//! the list of those inputs so a person can see why a hash moved.

use std::collections::BTreeMap;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::context::Context;
use crate::digest::hex;
use crate::lock;
use crate::role::Role;

/// The version of the image layout imagectl generates (staged context,
/// provisioning script, agent configuration). Bump it whenever generated
/// output changes, so that every image is rebuilt with the new layout.
pub const LAYOUT_VERSION: u32 = 3;

/// A content hash: 64 lowercase hex digits.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Hash(String);

impl Hash {
    /// `s` when it is 64 lowercase hex digits.
    pub fn parse(s: &str) -> Option<Hash> {
        (s.len() == 64
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
        .then(|| Hash(s.to_string()))
    }

    /// The 64 digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first 12 digits, for names and tables.
    pub fn short(&self) -> &str {
        &self.0[..12]
    }
}

impl TryFrom<String> for Hash {
    type Error = String;
    fn try_from(s: String) -> Result<Hash, String> {
        Hash::parse(&s)
            .ok_or_else(|| format!("`{s}` is not a content hash (64 lowercase hex digits)"))
    }
}

impl From<Hash> for String {
    fn from(h: Hash) -> String {
        h.0
    }
}

impl std::fmt::Display for Hash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::fmt::Debug for Hash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Hash({})", self.short())
    }
}

impl PartialEq<str> for Hash {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

/// The first 12 characters of a hash read from elsewhere (a tag, a
/// record), however long it is.
pub fn short(hash: &str) -> &str {
    hash.get(..12).unwrap_or(hash)
}

/// One thing that enters an image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Input {
    /// `layout`, `agent`, `base`, `packer`, `disk`, `role`, `file` or
    /// `template`.
    pub kind: &'static str,
    /// For files: the path relative to the project root.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// For things that are not files: their name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// SHA-256 of the input's bytes (files) or of its canonical form.
    pub sha256: String,
    /// For the base: the AMI it is pinned to in the home region.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ami: Option<String>,
    /// For files: where they land, with mode and owner.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dest: Option<String>,
    /// For files: octal mode.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// For files: `owner:group`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

impl Input {
    fn named(kind: &'static str, name: impl Into<String>, sha256: String) -> Input {
        Input {
            kind,
            path: None,
            name: Some(name.into()),
            sha256,
            ami: None,
            dest: None,
            mode: None,
            owner: None,
        }
    }

    /// The line this input contributes to the hash.
    fn hash_line(&self) -> String {
        let o = |v: &Option<String>| v.clone().unwrap_or_default();
        format!(
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\n",
            self.kind,
            o(&self.path),
            o(&self.name),
            self.sha256,
            o(&self.ami),
            o(&self.dest),
            o(&self.mode),
            o(&self.owner)
        )
    }
}

/// A role's content hash with the inputs it was computed from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ContentHash {
    /// The role.
    pub role: String,
    /// The hash.
    pub hash: Hash,
    /// Everything that went into it, in hashing order.
    pub inputs: Vec<Input>,
    /// The role's canonical form (the JSON its `role` input digests), kept
    /// in the [record](ContentHash::record) so that a later plan can say
    /// which keys changed.
    #[serde(skip)]
    pub canonical: String,
}

/// The largest record [`ContentHash::record`] writes with the role's
/// canonical form in it: what a standard-tier SSM parameter holds (4 KB).
/// A record is kept for every build and never pruned, so it stays in the
/// free tier: a bigger role is recorded without its canonical form, and a
/// later plan says only that the role definition changed.
pub const MAX_RECORD_BYTES: usize = 4096;

/// How a record's line holding the role's canonical form starts.
const CANONICAL_LINE: &str = "role-json\t";

impl ContentHash {
    /// The first 12 digits, for names and tables.
    pub fn short(&self) -> &str {
        self.hash.short()
    }
}

/// Computes the content hash of a concrete role from what resolving it
/// found: its locked base image `base` (named `base_name`), the text of its
/// Packer template, and the digests of the files its stage holds.
pub fn compute(
    role: &Role,
    base_name: &str,
    base: &lock::Entry,
    template: &str,
    context: &Context,
) -> ContentHash {
    let mut base_input = Input::named(
        "base",
        base_name,
        hex(&Sha256::digest(format!(
            "{}\n{}\n{}\n",
            base.ami, base.name, base.created
        ))),
    );
    base_input.ami = Some(base.ami.clone());
    let mut inputs = vec![
        Input::named(
            "layout",
            format!("imagectl-layout-{LAYOUT_VERSION}"),
            hex(&Sha256::digest(LAYOUT_VERSION.to_string())),
        ),
        Input::named(
            "agent",
            format!("imagectl-agent {}", env!("CARGO_PKG_VERSION")),
            imagectl_image::identity::AGENT.to_string(),
        ),
        base_input,
        Input::named(
            "packer",
            format!("images/{}.pkr.hcl", role.name),
            hex(&Sha256::digest(template.as_bytes())),
        ),
    ];
    if role.image.method == crate::role::Method::Disk {
        inputs.push(Input::named(
            "disk",
            format!("imagectl-disk-{}", crate::disk::DISK_LAYOUT_VERSION),
            crate::disk::digest(role.image.arch, &role.image.kernel_cmdline),
        ));
    }
    // Serializing plain data structs to a string cannot fail.
    let canonical = serde_json::to_string(role).unwrap_or_default();
    let mut role_input = Input::named(
        "role",
        role.name.clone(),
        hex(&Sha256::digest(canonical.as_bytes())),
    );
    role_input.path = role.sources.last().cloned();
    inputs.push(role_input);
    inputs.extend(context.sources.iter().map(|s| Input {
        kind: s.kind.as_str(),
        path: Some(s.shown()),
        name: None,
        sha256: s.sha256.clone(),
        ami: None,
        dest: Some(s.dest.clone()),
        mode: s.mode.clone(),
        owner: Some(format!("{}:{}", s.owner, s.group)),
    }));

    let mut h = Sha256::new();
    h.update(b"imagectl content hash\n");
    for i in &inputs {
        h.update(i.hash_line().as_bytes());
    }
    ContentHash {
        role: role.name.clone(),
        hash: Hash(hex(&h.finalize())),
        inputs,
        canonical,
    }
}

impl ContentHash {
    /// The inputs in the compact form stored next to the channels (one line
    /// each: kind, path or name, the first 16 hex digits of the digest, and
    /// the AMI for the base), then the role's canonical form on a line of
    /// its own (`role-json`, TAB, compact JSON, which escapes every line
    /// break and tab) when the whole fits in [`MAX_RECORD_BYTES`], so that
    /// a later plan can say what changed, down to the role's keys.
    pub fn record(&self) -> String {
        let inputs = self.input_lines();
        let full = format!("{inputs}\n{CANONICAL_LINE}{}", self.canonical);
        if self.canonical.is_empty() || full.len() > MAX_RECORD_BYTES {
            inputs
        } else {
            full
        }
    }

    fn input_lines(&self) -> String {
        self.inputs
            .iter()
            .map(|i| {
                let what = i.path.as_deref().or(i.name.as_deref()).unwrap_or("");
                let mut line = format!("{}\t{what}\t{}", i.kind, &i.sha256[..16]);
                if let Some(ami) = &i.ami {
                    line.push('\t');
                    line.push_str(ami);
                }
                line
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// What differs between a recorded input list and this one, in words.
    pub fn changes_since(&self, record: &str) -> Vec<String> {
        changes(record, &self.record(), &self.canonical)
    }
}

/// What differs between two recorded input lists ([`ContentHash::record`]),
/// in words, as [`ContentHash::changes_since`] says it: the role's keys
/// when both records hold its canonical form.
pub fn changes_between(old: &str, new: &str) -> Vec<String> {
    let canonical = new
        .lines()
        .find_map(|l| l.strip_prefix(CANONICAL_LINE))
        .unwrap_or_default();
    changes(old, new, canonical)
}

/// What differs from record `old` to record `new`, whose role's canonical
/// form is `canonical` (empty when unknown).
fn changes(old: &str, new: &str, canonical: &str) -> Vec<String> {
    let parse = |text: &str| -> BTreeMap<(String, String), (String, Option<String>)> {
        text.lines()
            .filter(|l| !l.starts_with(CANONICAL_LINE))
            .filter_map(|l| {
                let mut f = l.split('\t');
                let (kind, what, sha) = (f.next()?, f.next()?, f.next()?);
                Some((
                    (kind.to_string(), what.to_string()),
                    (sha.to_string(), f.next().map(String::from)),
                ))
            })
            .collect()
    };
    let (old_inputs, new_inputs) = (parse(old), parse(new));
    let describe = |kind: &str, what: &str| match kind {
        "layout" => "imagectl's image layout".to_string(),
        "agent" => "imagectl-agent".to_string(),
        "packer" => format!("the Packer template ({what})"),
        "role" => format!("the role definition of `{what}` (its file or a parent's)"),
        "base" => format!("base image `{what}`"),
        other => format!("{other} {what}"),
    };
    let mut out = Vec::new();
    for ((kind, what), (sha, ami)) in &new_inputs {
        match old_inputs.get(&(kind.clone(), what.clone())) {
            None if kind == "layout" || kind == "agent" => {
                out.push(format!("{} changed", describe(kind, what)))
            }
            None => out.push(format!("added {}", describe(kind, what))),
            Some((old_sha, old_ami)) if old_sha != sha => match (kind.as_str(), old_ami, ami) {
                ("base", Some(a), Some(b)) => {
                    out.push(format!("new base image `{what}`: {a} -> {b}"))
                }
                ("role", _, _) => out.extend(role_changes(old, canonical, what)),
                _ => out.push(format!("changed {}", describe(kind, what))),
            },
            Some(_) => {}
        }
    }
    for (kind, what) in old_inputs.keys() {
        if !new_inputs.contains_key(&(kind.clone(), what.clone()))
            && kind != "layout"
            && kind != "agent"
        {
            out.push(format!("removed {}", describe(kind, what)));
        }
    }
    out
}

/// What changed in the role definition since `record`, key by key when
/// the record holds the role's canonical form and `canonical` (the new
/// one) is known, else in one line.
fn role_changes(record: &str, canonical: &str, what: &str) -> Vec<String> {
    let old = record.lines().find_map(|l| l.strip_prefix(CANONICAL_LINE));
    let keys = old
        .filter(|_| !canonical.is_empty())
        .map(|old| crate::role::changes(old, canonical))
        .unwrap_or_default();
    if keys.is_empty() {
        vec![format!(
            "changed the role definition of `{what}` (its file or a parent's)"
        )]
    } else {
        keys
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_is_64_lowercase_hex_digits() {
        let h = Hash::parse(&"0123456789abcdef".repeat(4)).unwrap();
        assert_eq!(h.short(), "0123456789ab");
        assert_eq!(h.to_string().len(), 64);
        for bad in ["", "abc", &"0123456789ABCDEF".repeat(4), &"g".repeat(64)] {
            assert_eq!(Hash::parse(bad), None, "{bad}");
        }
        let json = serde_json::to_string(&h).unwrap();
        assert_eq!(json, format!("\"{h}\""));
        assert_eq!(serde_json::from_str::<Hash>(&json).unwrap(), h);
        assert!(serde_json::from_str::<Hash>("\"abc\"").is_err());
        assert_eq!(short("abc"), "abc");
    }

    /// A content hash of role `cron` whose role input digests to `digit`
    /// repeated, with `canonical` as its canonical form.
    fn hashed(canonical: &str, digit: char) -> ContentHash {
        let mut role = Input::named("role", "cron", digit.to_string().repeat(64));
        role.path = Some("roles/cron.toml".into());
        ContentHash {
            role: "cron".into(),
            hash: Hash(digit.to_string().repeat(64)),
            inputs: vec![role],
            canonical: canonical.into(),
        }
    }

    #[test]
    fn a_record_holds_the_canonical_role_so_changes_name_its_keys() {
        let old = hashed(r#"{"image":{"instance_type":"t3.small"}}"#, 'a');
        let new = hashed(r#"{"image":{"instance_type":"t3.medium"}}"#, 'b');
        assert_eq!(
            old.record(),
            "role\troles/cron.toml\taaaaaaaaaaaaaaaa\nrole-json\t{\"image\":{\"instance_type\":\"t3.small\"}}"
        );
        assert_eq!(
            new.changes_since(&old.record()),
            ["image.instance_type t3.small -> t3.medium"]
        );
        // Between two records (`imagectl diff`), the same words.
        assert_eq!(
            changes_between(&old.record(), &new.record()),
            ["image.instance_type t3.small -> t3.medium"]
        );
        assert_eq!(
            changes_between(&new.record(), &new.record()),
            Vec::<String>::new()
        );
        // A record from before canonical forms were kept, or of a role too
        // big to keep one: the role definition changed, in one line.
        let fallback =
            ["changed the role definition of `roles/cron.toml` (its file or a parent's)"];
        assert_eq!(new.changes_since(&old.input_lines()), fallback);
        let big = hashed(
            &format!(r#"{{"description":"{}"}}"#, "x".repeat(MAX_RECORD_BYTES)),
            'c',
        );
        assert_eq!(big.record(), big.input_lines());
        assert_eq!(new.changes_since(&big.record()), fallback);
    }
}
