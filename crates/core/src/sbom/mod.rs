//! Software bills of materials: what an image holds, as an SPDX 2.3 JSON
//! document named by its content hash, and what differs between two images.
//!
//! An [`Inventory`] is what the document says: the image's Debian packages
//! (name, version, architecture, source package, declared licence), the
//! files the role bakes (from the image's manifest, `/etc/imagectl/
//! image.json`, with SHA-1 and SHA-256 of their bytes, the boot templates
//! with where they are rendered), and the release archives it unpacks. It
//! is made from what each target has:
//!
//! - the local target's root filesystem tarball ([`rootfs`]): its dpkg
//!   database and copyright files, every installed package;
//! - on AWS, the staged build context ([`Inventory::declared`]): the
//!   packages of the role's `[packages] apt` list, as the provisioning
//!   script installs them, since nothing reads the built instance.
//!
//! [`spdx`] writes an inventory as SPDX (and reads one back), [`store`]
//! says where builds keep theirs, [`diff`] compares two, with Debian
//! versions ordered as dpkg orders them ([`version`]).

pub mod copyright;
pub mod diff;
pub mod dpkg;
pub mod purl;
pub mod rootfs;
pub mod spdx;
pub mod store;
pub mod version;

use std::collections::BTreeMap;
use std::path::Path;

use imagectl_image::config::{BootTemplate, ManifestEntry, CONFIG_DIR, TEMPLATES_DIR};
use serde::Serialize;

use crate::context::SourceKind;
use crate::fsutil::{io_error, IoError};
use crate::record::Kind;
use crate::stage::Staged;
use crate::target::Target;

/// Where an inventory's packages come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PackagesFrom {
    /// The built root filesystem's dpkg database: every installed package.
    Rootfs,
    /// The role's `[packages] apt` list, as the provisioning script
    /// installs it: names, and versions where the role pins them.
    Declared,
}

/// One Debian package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Package {
    /// Its name.
    pub name: String,
    /// Its version (declared packages: only when the role pins one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Its architecture (`amd64`, `all`); unknown for declared packages.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arch: Option<String>,
    /// The source package it was built from, with that package's version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<(String, String)>,
    /// The SPDX licence expression its copyright file declares.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub license: Option<String>,
}

/// Where a baked boot template is rendered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rendered {
    /// The rendering's path.
    pub dest: String,
    /// Its mode.
    pub mode: String,
    /// Its owner.
    pub owner: String,
    /// Its group.
    pub group: String,
}

/// One file the role bakes (its files, templates, the agent and its unit).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BakedFile {
    /// Absolute path in the image.
    pub path: String,
    /// SHA-256 of its bytes.
    pub sha256: String,
    /// SHA-1 of its bytes (SPDX requires one for every file).
    pub sha1: String,
    /// Octal mode.
    pub mode: String,
    /// Owner.
    pub owner: String,
    /// Group.
    pub group: String,
    /// For a boot template: where the agent renders it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template: Option<Rendered>,
}

/// One release archive the role unpacks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Archive {
    /// Its path relative to the project root (`roles/releases/...`).
    pub source: String,
    /// SHA-256 of its bytes.
    pub sha256: String,
    /// The directory it is unpacked into.
    pub dest: String,
    /// Owner of what is unpacked.
    pub owner: String,
    /// Group of what is unpacked.
    pub group: String,
    /// The symbolic link pointed at `dest`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
}

/// What an image holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Inventory {
    /// The role.
    pub role: String,
    /// The content hash.
    pub hash: String,
    /// The kind of image.
    pub target: Kind,
    /// The SBOM's creation time, seconds since the epoch: the build's
    /// `SOURCE_DATE_EPOCH` (the base image's creation time), so that two
    /// builds of the same inputs give the same document.
    pub created: i64,
    /// Where the packages were read.
    pub packages_from: PackagesFrom,
    /// Packages, by name and architecture.
    pub packages: Vec<Package>,
    /// Baked files, by path.
    pub files: Vec<BakedFile>,
    /// Release archives, in the role's order; `None` when not known (an
    /// SBOM made from a tarball alone: the image keeps what they unpacked,
    /// not their bytes).
    pub archives: Option<Vec<Archive>>,
    /// Licence references used by the packages, with the Debian name each
    /// stands for.
    pub license_refs: BTreeMap<String, String>,
    /// SHA-256 of the artifact the inventory was read from (the local
    /// target's tarball).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub artifact_sha256: Option<String>,
}

/// The baked files of a manifest, each with its SHA-1 from `sha1_of` and,
/// for the boot templates among them, where `templates` renders it.
pub fn baked_files(
    manifest: &[ManifestEntry],
    templates: &[BootTemplate],
    mut sha1_of: impl FnMut(&ManifestEntry) -> Result<String, IoError>,
) -> Result<Vec<BakedFile>, IoError> {
    let mut files = Vec::new();
    for e in manifest {
        let template = templates
            .iter()
            .find(|t| e.path == format!("{CONFIG_DIR}/{TEMPLATES_DIR}/{}", t.source))
            .map(|t| Rendered {
                dest: t.dest.clone(),
                mode: t.mode.clone(),
                owner: t.owner.clone(),
                group: t.group.clone(),
            });
        files.push(BakedFile {
            path: e.path.clone(),
            sha256: e.sha256.clone(),
            sha1: sha1_of(e)?,
            mode: e.mode.clone(),
            owner: e.owner.clone(),
            group: e.group.clone(),
            template,
        });
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(files)
}

/// The release archives of a target, in the role's order.
pub fn archives_of(t: &Target) -> Vec<Archive> {
    let sources = t
        .context
        .sources
        .iter()
        .filter(|s| s.kind == SourceKind::Archive);
    sources
        .zip(&t.role.archives)
        .map(|(s, a)| Archive {
            source: s.shown(),
            sha256: s.sha256.clone(),
            dest: a.dest.clone(),
            owner: a.owner.clone(),
            group: a.group.clone(),
            link: a.link.clone(),
        })
        .collect()
}

/// The SBOM's time for a target: its `SOURCE_DATE_EPOCH`, now when it has
/// none.
pub fn created_of(t: &Target) -> i64 {
    t.source_date_epoch().unwrap_or_else(crate::time::now_secs)
}

impl Inventory {
    /// The inventory of an AMI build of `t`, from its staged context: the
    /// packages of the role's `[packages] apt` list as `provision.sh`
    /// installs them, and every baked file with digests of the staged
    /// bytes.
    pub fn declared(t: &Target, staged: &Staged) -> Result<Inventory, IoError> {
        let mut packages: Vec<Package> = t
            .role
            .packages
            .iter()
            .map(|p| Package {
                name: p.name.clone(),
                version: p.version.clone(),
                arch: None,
                source: None,
                license: None,
            })
            .collect();
        packages.sort_by(|a, b| a.name.cmp(&b.name));
        let files = baked_files(&staged.manifest, &t.role.boot.templates, |e| {
            let path = staged.dir.join(format!("rootfs{}", e.path));
            file_sha1(&path)
        })?;
        Ok(Inventory {
            role: t.name().to_string(),
            hash: t.hash.hash.to_string(),
            target: Kind::Aws,
            created: created_of(t),
            packages_from: PackagesFrom::Declared,
            packages,
            files,
            archives: Some(archives_of(t)),
            license_refs: BTreeMap::new(),
            artifact_sha256: None,
        })
    }
}

/// SHA-1 of a file's bytes, in lowercase hex.
pub fn file_sha1(path: &Path) -> Result<String, IoError> {
    use sha1::Digest;
    let mut f = std::fs::File::open(path).map_err(io_error("read", path))?;
    let mut h = sha1::Sha1::new();
    std::io::copy(&mut f, &mut h).map_err(io_error("read", path))?;
    Ok(crate::digest::hex(&h.finalize()))
}
