//! An [`Inventory`] as an SPDX 2.3 JSON document, and back.
//!
//! The document describes one package, the image (`SPDXRef-Image`: the
//! role's name, the content hash as its version), which contains every
//! Debian package, the role's release archives, and a package of the
//! files the role bakes (`SPDXRef-RoleFiles`, whose files are listed with
//! SHA-1 and SHA-256). Everything in it is sorted and nothing depends on
//! the clock: its time is the inventory's, and its namespace is made of
//! the target, the role, the content hash and a digest of the rest of the
//! document, so equal inventories give equal bytes and different ones
//! different namespaces.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{Archive, BakedFile, Inventory, Package, PackagesFrom, Rendered};
use crate::digest::hex;
use crate::record::Kind;

/// Who made the document, as SPDX writes a creator.
pub fn tool() -> String {
    format!("Tool: imagectl-{}", env!("CARGO_PKG_VERSION"))
}

/// The base of every document namespace imagectl makes. `.invalid` is
/// reserved (RFC 2606): the namespace names the document, nothing is
/// served there.
pub const NAMESPACE_BASE: &str = "https://imagectl.invalid/spdx";

/// `NOASSERTION`, SPDX's "not known or not said".
const NOASSERTION: &str = "NOASSERTION";

/// The SPDX identifier of the image package.
pub const IMAGE_ID: &str = "SPDXRef-Image";
/// The SPDX identifier of the package of baked files.
pub const ROLE_FILES_ID: &str = "SPDXRef-RoleFiles";

/// An SPDX 2.3 document, as much of it as imagectl writes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Document {
    /// `SPDX-2.3`.
    pub spdx_version: String,
    /// `CC0-1.0`, as the specification requires.
    pub data_license: String,
    /// `SPDXRef-DOCUMENT`.
    #[serde(rename = "SPDXID")]
    pub spdx_id: String,
    /// The document's name.
    pub name: String,
    /// Its unique URI.
    pub document_namespace: String,
    /// Who made it and when.
    pub creation_info: CreationInfo,
    /// Packages.
    #[serde(default)]
    pub packages: Vec<SpdxPackage>,
    /// Files.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<SpdxFile>,
    /// Licences without an SPDX identifier.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub has_extracted_licensing_infos: Vec<ExtractedLicense>,
    /// Relationships between the elements.
    #[serde(default)]
    pub relationships: Vec<Relationship>,
}

/// When, by whom and how the document was made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreationInfo {
    /// ISO 8601 in UTC.
    pub created: String,
    /// `Tool: imagectl-VERSION`.
    pub creators: Vec<String>,
    /// How the packages were found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// An SPDX package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SpdxPackage {
    /// Its identifier.
    #[serde(rename = "SPDXID")]
    pub spdx_id: String,
    /// Its name.
    pub name: String,
    /// Its version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_info: Option<String>,
    /// What it is (`OPERATING-SYSTEM`, `APPLICATION`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_package_purpose: Option<String>,
    /// Where it comes from.
    pub download_location: String,
    /// Whether its files are listed.
    pub files_analyzed: bool,
    /// With listed files: the SPDX verification code over them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package_verification_code: Option<VerificationCode>,
    /// Digests of the package itself.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checksums: Vec<Checksum>,
    /// The licence concluded (imagectl concludes none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub license_concluded: Option<String>,
    /// The licence its copyright file declares.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub license_declared: Option<String>,
    /// Copyright notices (imagectl copies none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copyright_text: Option<String>,
    /// The source package it was built from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_info: Option<String>,
    /// Its package URL.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub external_refs: Vec<ExternalRef>,
    /// Anything else.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// Annotations: for the image, its imagectl identity.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub annotations: Vec<Annotation>,
}

/// An SPDX file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpdxFile {
    /// Its identifier.
    #[serde(rename = "SPDXID")]
    pub spdx_id: String,
    /// `./` and its path in the image.
    #[serde(rename = "fileName")]
    pub file_name: String,
    /// SHA-1 and SHA-256.
    pub checksums: Vec<Checksum>,
    /// `NOASSERTION`.
    #[serde(
        rename = "licenseConcluded",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub license_concluded: Option<String>,
    /// `NOASSERTION`.
    #[serde(
        rename = "copyrightText",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub copyright_text: Option<String>,
    /// Mode, owner and, for a boot template, where it is rendered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// A digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Checksum {
    /// `SHA1`, `SHA256`.
    pub algorithm: String,
    /// Lowercase hex.
    pub checksum_value: String,
}

/// A package verification code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VerificationCode {
    /// SHA-1 over the sorted SHA-1s of the package's files.
    pub package_verification_code_value: String,
}

/// A reference to the package elsewhere: its purl.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExternalRef {
    /// `PACKAGE-MANAGER`.
    pub reference_category: String,
    /// `purl`.
    pub reference_type: String,
    /// The purl.
    pub reference_locator: String,
}

/// A licence the SPDX list does not have.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExtractedLicense {
    /// `LicenseRef-...`.
    pub license_id: String,
    /// The name Debian gives it.
    pub name: String,
    /// Where its text is.
    pub extracted_text: String,
}

/// A relationship between two elements.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Relationship {
    /// The element it is about.
    pub spdx_element_id: String,
    /// `DESCRIBES`, `CONTAINS`.
    pub relationship_type: String,
    /// The other element.
    pub related_spdx_element: String,
}

/// An annotation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Annotation {
    /// When (the document's time).
    pub annotation_date: String,
    /// `OTHER`.
    pub annotation_type: String,
    /// `Tool: imagectl-VERSION`.
    pub annotator: String,
    /// `imagectl:KEY=VALUE` lines.
    pub comment: String,
}

/// What the document's creation comment says about where its packages come
/// from.
fn how(inv: &Inventory) -> String {
    let mut how = match inv.packages_from {
        PackagesFrom::Rootfs => {
            "Packages: every package dpkg lists as installed in the built root \
             filesystem (var/lib/dpkg/status), each with the licences its machine-readable \
             copyright file (/usr/share/doc/PACKAGE/copyright) declares. Files: every file the \
             role bakes, from the image's manifest (/etc/imagectl/image.json), with digests of \
             the bytes in the image."
                .to_string()
        }
        PackagesFrom::Declared => "Packages: only the role's [packages] apt list, exactly as the \
             provisioning script (provision.sh in the staged build context) installs it: names, \
             and versions only where the role pins one. Not read from the built image: the base \
             image's own packages, the dependencies apt resolves on the build instance and the \
             installed versions are not listed, and no licence is stated. Files: every file the \
             role bakes, from the staged build context, with digests of the staged bytes."
            .to_string(),
    };
    if inv.archives.is_none() {
        how.push(' ');
        how.push_str(ARCHIVES_UNKNOWN);
    }
    how
}

/// What the creation comment says when the release archives are not known.
const ARCHIVES_UNKNOWN: &str = "Release archives: not known (this SBOM was made from the \
     root filesystem alone, after its build: the image keeps what they unpacked, not their bytes).";

/// The characters an SPDX identifier may hold, from `s`: `+` spelled
/// `plus`, anything else but letters, digits, `.` and `-` as `-`.
fn id_part(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '-' => out.push(c),
            '+' => out.push_str("plus"),
            _ => out.push('-'),
        }
    }
    out.trim_matches('-').to_string()
}

/// `base`, or `base-2`, `base-3`... when taken.
fn unique(base: String, taken: &mut std::collections::BTreeSet<String>) -> String {
    let mut id = base.clone();
    let mut n = 2;
    while !taken.insert(id.clone()) {
        id = format!("{base}-{n}");
        n += 1;
    }
    id
}

fn checksum(algorithm: &str, value: &str) -> Checksum {
    Checksum {
        algorithm: algorithm.to_string(),
        checksum_value: value.to_string(),
    }
}

fn contains(from: &str, to: &str) -> Relationship {
    Relationship {
        spdx_element_id: from.to_string(),
        relationship_type: "CONTAINS".to_string(),
        related_spdx_element: to.to_string(),
    }
}

fn file_comment(f: &BakedFile) -> String {
    let mut c = format!("mode {}, owner {}:{}", f.mode, f.owner, f.group);
    if let Some(t) = &f.template {
        c.push_str(&format!(
            "; boot template rendered to {} (mode {}, owner {}:{})",
            t.dest, t.mode, t.owner, t.group
        ));
    }
    c
}

fn archive_comment(a: &Archive) -> String {
    let mut c = format!(
        "release archive {}, unpacked to {} (owner {}:{})",
        a.source, a.dest, a.owner, a.group
    );
    if let Some(link) = &a.link {
        c.push_str(&format!(", linked from {link}"));
    }
    c
}

/// A package that says nothing yet: no version, files, digests, licence
/// or copyright known.
fn package(id: &str, name: &str) -> SpdxPackage {
    SpdxPackage {
        spdx_id: id.to_string(),
        name: name.to_string(),
        version_info: None,
        primary_package_purpose: None,
        download_location: NOASSERTION.into(),
        files_analyzed: false,
        package_verification_code: None,
        checksums: Vec::new(),
        license_concluded: Some(NOASSERTION.into()),
        license_declared: Some(NOASSERTION.into()),
        copyright_text: Some(NOASSERTION.into()),
        source_info: None,
        external_refs: Vec::new(),
        comment: None,
        annotations: Vec::new(),
    }
}

fn deb_package(p: &Package, id: String, from: PackagesFrom) -> SpdxPackage {
    // The `deb` purl type requires a version: a declared package the
    // role does not pin has none.
    let purl = p
        .version
        .as_ref()
        .map(|v| super::purl::deb(&p.name, v, p.arch.as_deref()));
    SpdxPackage {
        version_info: p.version.clone(),
        license_declared: Some(p.license.clone().unwrap_or_else(|| NOASSERTION.into())),
        source_info: p
            .source
            .as_ref()
            .map(|(n, v)| format!("built from Debian source package {n} {v}")),
        external_refs: purl
            .map(|locator| {
                vec![ExternalRef {
                    reference_category: "PACKAGE-MANAGER".into(),
                    reference_type: "purl".into(),
                    reference_locator: locator,
                }]
            })
            .unwrap_or_default(),
        comment: (from == PackagesFrom::Declared)
            .then(|| "declared in the role's [packages] apt list".to_string()),
        ..package(&id, &p.name)
    }
}

/// The SPDX verification code of files with these SHA-1s: SHA-1 over
/// their sorted concatenation (SPDX 2.3, clause 7.9).
fn verification_code(sha1s: &[&str]) -> String {
    let mut sorted: Vec<&str> = sha1s.to_vec();
    sorted.sort_unstable();
    use sha1::Digest as _;
    hex(&sha1::Sha1::digest(sorted.concat().as_bytes()))
}

/// The package describing the image, with its imagectl identity.
fn image_package(inv: &Inventory, created: &str) -> SpdxPackage {
    let comment = match inv.target {
        Kind::Local => format!(
            "The local target's root filesystem of role `{}`, content hash {} (images/local/{}-{}.tar; checksum: the tarball's).",
            inv.role,
            inv.hash,
            inv.role,
            crate::hash::short(&inv.hash)
        ),
        Kind::Aws => format!(
            "The AMIs of role `{}`, content hash {}: the images tagged imagectl:role={} and imagectl:content-hash={} in every region.",
            inv.role, inv.hash, inv.role, inv.hash
        ),
    };
    SpdxPackage {
        version_info: Some(inv.hash.clone()),
        primary_package_purpose: Some("OPERATING-SYSTEM".into()),
        checksums: inv
            .artifact_sha256
            .iter()
            .map(|s| checksum("SHA256", s))
            .collect(),
        comment: Some(comment),
        annotations: vec![Annotation {
            annotation_date: created.to_string(),
            annotation_type: "OTHER".into(),
            annotator: tool(),
            comment: format!(
                "imagectl:role={}\nimagectl:content-hash={}\nimagectl:target={}",
                inv.role,
                inv.hash,
                inv.target.as_str()
            ),
        }],
        ..package(IMAGE_ID, &inv.role)
    }
}

/// The package of the role's baked files (SPDX lets only a package whose
/// files are analysed contain files), the files, and the relationships
/// that put them in it.
fn role_files(
    inv: &Inventory,
    taken: &mut std::collections::BTreeSet<String>,
) -> (SpdxPackage, Vec<SpdxFile>, Vec<Relationship>) {
    let mut files = Vec::new();
    let mut relationships = Vec::new();
    for f in &inv.files {
        let id = unique(format!("SPDXRef-File-{}", id_part(&f.path)), taken);
        relationships.push(contains(ROLE_FILES_ID, &id));
        files.push(SpdxFile {
            spdx_id: id,
            file_name: format!(".{}", f.path),
            checksums: vec![checksum("SHA1", &f.sha1), checksum("SHA256", &f.sha256)],
            license_concluded: Some(NOASSERTION.into()),
            copyright_text: Some(NOASSERTION.into()),
            comment: Some(file_comment(f)),
        });
    }
    let sha1s: Vec<&str> = inv.files.iter().map(|f| f.sha1.as_str()).collect();
    let package = SpdxPackage {
        version_info: Some(inv.hash.clone()),
        primary_package_purpose: Some("FILE".into()),
        files_analyzed: true,
        package_verification_code: Some(VerificationCode {
            package_verification_code_value: verification_code(&sha1s),
        }),
        comment: Some(format!(
            "The files role `{}` bakes into the image (its files and boot templates, the agent and its unit), from the image's manifest /etc/imagectl/image.json.",
            inv.role
        )),
        ..package(ROLE_FILES_ID, &format!("{}-baked-files", inv.role))
    };
    (package, files, relationships)
}

/// The package of one release archive.
fn archive_package(a: &Archive, id: &str) -> SpdxPackage {
    let name = a.source.rsplit('/').next().unwrap_or(&a.source);
    SpdxPackage {
        primary_package_purpose: Some("APPLICATION".into()),
        checksums: vec![checksum("SHA256", &a.sha256)],
        comment: Some(archive_comment(a)),
        ..package(id, name)
    }
}

/// The document of `inv` (see the module).
pub fn document(inv: &Inventory) -> Document {
    let created = crate::time::iso(inv.created);
    let mut taken =
        std::collections::BTreeSet::from([IMAGE_ID.to_string(), ROLE_FILES_ID.to_string()]);
    let (files_package, files, file_relationships) = role_files(inv, &mut taken);
    let mut packages = vec![image_package(inv, &created), files_package];
    let mut relationships = vec![
        Relationship {
            spdx_element_id: "SPDXRef-DOCUMENT".into(),
            relationship_type: "DESCRIBES".into(),
            related_spdx_element: IMAGE_ID.into(),
        },
        contains(IMAGE_ID, ROLE_FILES_ID),
    ];
    relationships.extend(file_relationships);
    for (i, a) in inv.archives.iter().flatten().enumerate() {
        let id = unique(format!("SPDXRef-Archive-{i}"), &mut taken);
        relationships.push(contains(IMAGE_ID, &id));
        packages.push(archive_package(a, &id));
    }
    for p in &inv.packages {
        let base = match &p.arch {
            Some(a) => format!("SPDXRef-deb-{}-{}", id_part(&p.name), id_part(a)),
            None => format!("SPDXRef-deb-{}", id_part(&p.name)),
        };
        let id = unique(base, &mut taken);
        relationships.push(contains(IMAGE_ID, &id));
        packages.push(deb_package(p, id, inv.packages_from));
    }
    let extracted = inv
        .license_refs
        .iter()
        .map(|(id, name)| ExtractedLicense {
            license_id: id.clone(),
            name: name.clone(),
            extracted_text: format!(
                "A licence that Debian machine-readable copyright files in this image name `{name}`, \
                 which has no SPDX identifier; its text is in the copyright file \
                 (/usr/share/doc/PACKAGE/copyright) of each package that declares it."
            ),
        })
        .collect();
    let mut doc = Document {
        spdx_version: "SPDX-2.3".into(),
        data_license: "CC0-1.0".into(),
        spdx_id: "SPDXRef-DOCUMENT".into(),
        name: format!("imagectl-{}-{}-{}", inv.target.as_str(), inv.role, inv.hash),
        document_namespace: String::new(),
        creation_info: CreationInfo {
            created,
            creators: vec![tool()],
            comment: Some(how(inv)),
        },
        packages,
        files,
        has_extracted_licensing_infos: extracted,
        relationships,
    };
    let digest = hex(&Sha256::digest(render(&doc)));
    doc.document_namespace = format!(
        "{NAMESPACE_BASE}/{}/{}/{}-{}",
        inv.target.as_str(),
        inv.role,
        inv.hash,
        &digest[..16]
    );
    doc
}

/// The document's bytes: pretty JSON and a final newline.
pub fn render(doc: &Document) -> Vec<u8> {
    let mut bytes = serde_json::to_vec_pretty(doc).unwrap_or_default();
    bytes.push(b'\n');
    bytes
}

/// Why a document cannot be read back.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ReadError(String);

/// `imagectl:KEY=VALUE` lines of the image's annotations.
fn identity(doc: &Document) -> BTreeMap<String, String> {
    doc.packages
        .iter()
        .filter(|p| p.spdx_id == IMAGE_ID)
        .flat_map(|p| &p.annotations)
        .flat_map(|a| a.comment.lines())
        .filter_map(|l| l.strip_prefix("imagectl:")?.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The rendering a file's comment names, if it is a boot template.
fn rendered_of(comment: &str) -> Option<Rendered> {
    let rest = comment.split_once("; boot template rendered to ")?.1;
    let (dest, rest) = rest.split_once(" (mode ")?;
    let (mode, rest) = rest.split_once(", owner ")?;
    let (owner, group) = rest.trim_end_matches(')').split_once(':')?;
    Some(Rendered {
        dest: dest.into(),
        mode: mode.into(),
        owner: owner.into(),
        group: group.into(),
    })
}

/// Mode, owner and group from a file's comment.
fn mode_owner(comment: &str) -> (String, String, String) {
    let first = comment.split(';').next().unwrap_or_default();
    let mode = first
        .strip_prefix("mode ")
        .and_then(|r| r.split(',').next())
        .unwrap_or_default();
    let owner = first.split_once(", owner ").map(|(_, o)| o).unwrap_or(":");
    let (o, g) = owner.split_once(':').unwrap_or((owner, ""));
    (mode.into(), o.into(), g.into())
}

fn archive_of(p: &SpdxPackage) -> Archive {
    let comment = p.comment.clone().unwrap_or_default();
    let rest = comment.strip_prefix("release archive ").unwrap_or_default();
    let (source, rest) = rest.split_once(", unpacked to ").unwrap_or((rest, ""));
    let (dest, rest) = rest.split_once(" (owner ").unwrap_or((rest, ""));
    let (owner, rest) = rest.split_once(')').unwrap_or((rest, ""));
    let (o, g) = owner.split_once(':').unwrap_or((owner, ""));
    Archive {
        source: source.into(),
        sha256: p
            .checksums
            .iter()
            .find(|c| c.algorithm == "SHA256")
            .map(|c| c.checksum_value.clone())
            .unwrap_or_default(),
        dest: dest.into(),
        owner: o.into(),
        group: g.into(),
        link: rest.strip_prefix(", linked from ").map(String::from),
    }
}

/// A Debian package of the document.
fn deb_of(p: &SpdxPackage) -> Package {
    let purl = p
        .external_refs
        .iter()
        .find(|r| r.reference_type == "purl")
        .and_then(|r| super::purl::parse_deb(&r.reference_locator));
    let source = p
        .source_info
        .as_deref()
        .and_then(|s| s.strip_prefix("built from Debian source package "))
        .and_then(|s| s.split_once(' '))
        .map(|(n, v)| (n.to_string(), v.to_string()));
    Package {
        name: p.name.clone(),
        version: p.version_info.clone(),
        arch: purl.and_then(|(_, _, a)| a),
        source,
        license: p.license_declared.clone().filter(|l| l != NOASSERTION),
    }
}

/// A baked file of the document.
fn file_of(f: &SpdxFile) -> BakedFile {
    let digest = |alg: &str| {
        f.checksums
            .iter()
            .find(|c| c.algorithm == alg)
            .map(|c| c.checksum_value.clone())
            .unwrap_or_default()
    };
    let comment = f.comment.clone().unwrap_or_default();
    let (mode, owner, group) = mode_owner(&comment);
    BakedFile {
        path: f.file_name.trim_start_matches('.').to_string(),
        sha256: digest("SHA256"),
        sha1: digest("SHA1"),
        mode,
        owner,
        group,
        template: rendered_of(&comment),
    }
}

/// Reads back a document imagectl wrote.
pub fn read(bytes: &[u8]) -> Result<Inventory, ReadError> {
    let doc: Document = serde_json::from_slice(bytes)
        .map_err(|e| ReadError(format!("not an SPDX 2.3 JSON document: {e}")))?;
    let id = identity(&doc);
    let (Some(role), Some(hash)) = (id.get("role"), id.get("content-hash")) else {
        return Err(ReadError(
            "not an SBOM imagectl wrote: its image package has no imagectl:role and imagectl:content-hash annotation".into(),
        ));
    };
    let target = match id.get("target").map(String::as_str) {
        Some("local") => Kind::Local,
        _ => Kind::Aws,
    };
    let comment = doc.creation_info.comment.as_deref().unwrap_or_default();
    let declared = comment.contains("[packages] apt list");
    let archives_known = !comment.contains(ARCHIVES_UNKNOWN);
    let image = doc.packages.iter().find(|p| p.spdx_id == IMAGE_ID);
    let archives = doc
        .packages
        .iter()
        .filter(|p| p.spdx_id.starts_with("SPDXRef-Archive-"))
        .map(archive_of)
        .collect();
    let packages = doc
        .packages
        .iter()
        .filter(|p| p.spdx_id.starts_with("SPDXRef-deb-"))
        .map(deb_of)
        .collect();
    let files = doc.files.iter().map(file_of).collect();
    Ok(Inventory {
        role: role.clone(),
        hash: hash.clone(),
        target,
        created: crate::time::iso_secs(&doc.creation_info.created).unwrap_or(0),
        packages_from: if declared {
            PackagesFrom::Declared
        } else {
            PackagesFrom::Rootfs
        },
        packages,
        files,
        archives: archives_known.then_some(archives),
        license_refs: doc
            .has_extracted_licensing_infos
            .iter()
            .map(|l| (l.license_id.clone(), l.name.clone()))
            .collect(),
        artifact_sha256: image
            .and_then(|i| i.checksums.iter().find(|c| c.algorithm == "SHA256"))
            .map(|c| c.checksum_value.clone()),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A small inventory of each kind of element.
    pub(crate) fn inventory() -> Inventory {
        Inventory {
            role: "worker".into(),
            hash: "ab".repeat(32),
            target: Kind::Local,
            created: 1_788_303_067,
            packages_from: PackagesFrom::Rootfs,
            packages: vec![
                Package {
                    name: "libjq1".into(),
                    version: Some("1.6-2.1".into()),
                    arch: Some("amd64".into()),
                    source: Some(("jq".into(), "1.6-2.1".into())),
                    license: Some("LicenseRef-Debian-icu AND MIT".into()),
                },
                Package {
                    name: "libstdc++6".into(),
                    version: Some("12.2.0-14+deb12u1".into()),
                    arch: Some("amd64".into()),
                    source: Some(("gcc-12".into(), "12.2.0-14+deb12u1".into())),
                    license: None,
                },
            ],
            files: vec![
                BakedFile {
                    path: "/etc/imagectl/templates/templates/worker/sidekiq.env.hbs".into(),
                    sha256: "1".repeat(64),
                    sha1: "2".repeat(40),
                    mode: "0644".into(),
                    owner: "root".into(),
                    group: "root".into(),
                    template: Some(Rendered {
                        dest: "/etc/learn/sidekiq.env".into(),
                        mode: "0600".into(),
                        owner: "learn".into(),
                        group: "learn".into(),
                    }),
                },
                BakedFile {
                    path: "/etc/systemd/system/sidekiq.service".into(),
                    sha256: "3".repeat(64),
                    sha1: "4".repeat(40),
                    mode: "0644".into(),
                    owner: "root".into(),
                    group: "root".into(),
                    template: None,
                },
            ],
            archives: Some(vec![Archive {
                source: "roles/releases/learn-sample.tar.gz".into(),
                sha256: "5".repeat(64),
                dest: "/srv/learn/releases/sample".into(),
                owner: "learn".into(),
                group: "learn".into(),
                link: Some("/srv/learn/current".into()),
            }]),
            license_refs: BTreeMap::from([(
                "LicenseRef-Debian-icu".to_string(),
                "ICU".to_string(),
            )]),
            artifact_sha256: Some("6".repeat(64)),
        }
    }

    #[test]
    fn a_document_reads_back_as_its_inventory() {
        let inv = inventory();
        let doc = document(&inv);
        let bytes = render(&doc);
        assert_eq!(read(&bytes).unwrap(), inv);
        // Without its archives (made from a tarball alone): still itself.
        let unknown = Inventory {
            archives: None,
            ..inv.clone()
        };
        assert_eq!(read(&render(&document(&unknown))).unwrap(), unknown);
        // Same inventory, same bytes; another one, another namespace.
        assert_eq!(render(&document(&inv)), bytes);
        let mut other = inv.clone();
        other.packages.pop();
        assert_ne!(document(&other).document_namespace, doc.document_namespace);
        assert!(doc.document_namespace.starts_with(&format!(
            "https://imagectl.invalid/spdx/local/worker/{}-",
            inv.hash
        )));
    }

    #[test]
    fn packages_carry_their_purl_source_and_licence() {
        let doc = document(&inventory());
        let p = doc
            .packages
            .iter()
            .find(|p| p.name == "libstdc++6")
            .unwrap();
        assert_eq!(p.spdx_id, "SPDXRef-deb-libstdcplusplus6-amd64");
        assert_eq!(
            p.external_refs[0].reference_locator,
            "pkg:deb/debian/libstdc%2B%2B6@12.2.0-14%2Bdeb12u1?arch=amd64"
        );
        assert_eq!(
            p.source_info.as_deref(),
            Some("built from Debian source package gcc-12 12.2.0-14+deb12u1")
        );
        assert_eq!(p.license_declared.as_deref(), Some("NOASSERTION"));
        assert_eq!(doc.creation_info.created, "2026-09-01T22:51:07Z");
        // The files' package: its verification code over the files' SHA-1s.
        let files = doc
            .packages
            .iter()
            .find(|p| p.spdx_id == ROLE_FILES_ID)
            .unwrap();
        let mut both = format!("{}{}", "2".repeat(40), "4".repeat(40));
        assert_eq!(
            files
                .package_verification_code
                .as_ref()
                .unwrap()
                .package_verification_code_value,
            {
                use sha1::Digest as _;
                hex(&sha1::Sha1::digest(std::mem::take(&mut both).as_bytes()))
            }
        );
    }
}
