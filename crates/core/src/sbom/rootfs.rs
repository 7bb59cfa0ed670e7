//! The inventory of a root filesystem tarball (the local target's image):
//! its installed packages from dpkg's database, their licences from their
//! copyright files, the role and hash and the baked files from the image's
//! manifest, with digests of the bytes the tarball holds.
//!
//! Two passes over the tarball: the first finds the database, the
//! copyright files (following the symbolic links Debian uses for the
//! documentation of packages built from one source) and the manifest; the
//! second digests exactly the files the manifest lists.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};

use imagectl_image::config::{ImageConfig, CONFIG_DIR, CONFIG_FILE};
use sha2::Digest;

use super::{baked_files, copyright, dpkg, Archive, Inventory, Package, PackagesFrom};
use crate::digest::hex;
use crate::record::Kind;

/// Why a tarball has no inventory.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading it failed.
    #[error("cannot read the root filesystem `{}`: {source}", path.display())]
    Read {
        /// The tarball.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// It is not an image imagectl built.
    #[error("`{}` is not a root filesystem imagectl built: {what}", path.display())]
    NotAnImage {
        /// The tarball.
        path: PathBuf,
        /// What is missing or wrong.
        what: String,
    },
    /// A baked file's bytes are not those its manifest lists.
    #[error("`{}` in `{}` has other bytes than the image's manifest lists (manifest {}, tarball {})", file, path.display(), crate::hash::short(manifest), crate::hash::short(found))]
    Mismatch {
        /// The tarball.
        path: PathBuf,
        /// The file.
        file: String,
        /// The manifest's SHA-256.
        manifest: String,
        /// The tarball's.
        found: String,
    },
}

/// `./a/b` and `a/b/` as `a/b`.
fn clean(p: &Path) -> String {
    let s = p.to_string_lossy();
    s.trim_start_matches("./")
        .trim_start_matches('/')
        .trim_end_matches('/')
        .to_string()
}

/// `link` (a symbolic link's target) resolved against the directory of
/// `at`, both relative to the root; `None` when it leaves the root.
fn resolve(at: &str, link: &str) -> Option<String> {
    let mut parts: Vec<&str> = if link.starts_with('/') {
        Vec::new()
    } else {
        at.split('/').collect::<Vec<_>>()
    };
    if !link.starts_with('/') {
        parts.pop();
    }
    for c in link.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            c => parts.push(c),
        }
    }
    Some(parts.join("/"))
}

/// What a pass over the tarball keeps.
#[derive(Default)]
struct Found {
    status: Option<String>,
    /// The image's configuration, once read.
    config: Option<ImageConfig>,
    /// Copyright files under `usr/share/doc/`, by path.
    copyrights: BTreeMap<String, String>,
    /// Symbolic and hard links under `usr/share/doc/`: path → target path.
    links: BTreeMap<String, String>,
    /// SHA-1 and SHA-256 of the manifest's files, by path relative to the
    /// root.
    digests: BTreeMap<String, (String, String)>,
    /// The newest modification time of any entry.
    newest: u64,
}

const DOC: &str = "usr/share/doc/";

/// The tarball's entries, skipping the bytes of those not read by
/// seeking over them.
fn open(path: &Path) -> Result<tar::Archive<std::io::BufReader<std::fs::File>>, Error> {
    let file = std::fs::File::open(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(tar::Archive::new(std::io::BufReader::with_capacity(
        1 << 16,
        file,
    )))
}

/// SHA-1 and SHA-256 of what `r` reads.
fn digest(mut r: impl Read) -> std::io::Result<(String, String)> {
    let mut sha1 = sha1::Sha1::new();
    let mut sha256 = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            break;
        }
        sha1.update(&buf[..n]);
        sha256.update(&buf[..n]);
    }
    Ok((hex(&sha1.finalize()), hex(&sha256.finalize())))
}

/// The manifest's paths relative to the root.
fn manifest_paths(config: &ImageConfig) -> BTreeSet<String> {
    config
        .manifest
        .iter()
        .map(|e| e.path.trim_start_matches('/').to_string())
        .collect()
}

/// One pass: the database, the copyright files and their links, the
/// image's configuration and, once it is known, the digests of the files
/// its manifest lists (mmdebstrap sorts the tarball, so the configuration
/// comes before them).
fn scan(path: &Path) -> Result<Found, Error> {
    let read = |source| Error::Read {
        path: path.to_path_buf(),
        source,
    };
    let mut archive = open(path)?;
    let mut found = Found::default();
    let mut baked = BTreeSet::new();
    let config_path = format!("{}/{CONFIG_FILE}", CONFIG_DIR.trim_start_matches('/'));
    for entry in archive.entries_with_seek().map_err(read)? {
        let mut entry = entry.map_err(read)?;
        let name = clean(&entry.path().map_err(read)?);
        let kind = entry.header().entry_type();
        found.newest = found.newest.max(entry.header().mtime().unwrap_or(0));
        let wanted = name == dpkg::STATUS
            || name == config_path
            || (name.starts_with(DOC) && name.ends_with("/copyright"));
        if let Some(doc) = name.strip_prefix(DOC) {
            if kind.is_symlink() || kind.is_hard_link() {
                if let Some(target) = entry.link_name().map_err(read)? {
                    let target = target.to_string_lossy().into_owned();
                    let to = if kind.is_hard_link() {
                        Some(clean(Path::new(&target)))
                    } else {
                        resolve(&name, &target)
                    };
                    // Only the links that can lead to a copyright file: a
                    // package's directory, or its copyright file.
                    if let Some(to) = to.filter(|_| !doc.contains('/') || wanted) {
                        found.links.insert(name.clone(), to);
                    }
                }
                continue;
            }
        }
        if !kind.is_file() {
            continue;
        }
        if baked.contains(&name) {
            found
                .digests
                .insert(name, digest(&mut entry).map_err(read)?);
            continue;
        }
        if !wanted {
            continue;
        }
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).map_err(read)?;
        if name == config_path {
            let config: ImageConfig =
                serde_json::from_slice(&bytes).map_err(|e| Error::NotAnImage {
                    path: path.to_path_buf(),
                    what: format!("its /etc/imagectl/image.json does not parse: {e}"),
                })?;
            baked = manifest_paths(&config);
            found.config = Some(config);
        } else {
            let text = String::from_utf8_lossy(&bytes).into_owned();
            if name == dpkg::STATUS {
                found.status = Some(text);
            } else {
                found.copyrights.insert(name, text);
            }
        }
    }
    Ok(found)
}

impl Found {
    /// The text of `usr/share/doc/PACKAGE/copyright`, following links.
    fn copyright(&self, package: &str) -> Option<&String> {
        let mut path = format!("{DOC}{package}/copyright");
        for _ in 0..8 {
            if let Some(text) = self.copyrights.get(&path) {
                return Some(text);
            }
            if let Some(to) = self.links.get(&path) {
                path = to.clone();
                continue;
            }
            // The package's documentation directory is a link.
            let dir = path.strip_suffix("/copyright")?;
            path = format!("{}/copyright", self.links.get(dir)?);
        }
        None
    }
}

/// SHA-1 and SHA-256 of the regular files at `paths` (relative to the
/// root): a second pass, for a tarball that holds a baked file before the
/// image's configuration.
fn digests(
    path: &Path,
    paths: &BTreeSet<String>,
) -> Result<BTreeMap<String, (String, String)>, Error> {
    let read = |source| Error::Read {
        path: path.to_path_buf(),
        source,
    };
    let mut archive = open(path)?;
    let mut out = BTreeMap::new();
    for entry in archive.entries_with_seek().map_err(read)? {
        let mut entry = entry.map_err(read)?;
        let name = clean(&entry.path().map_err(read)?);
        if paths.contains(&name) && entry.header().entry_type().is_file() {
            out.insert(name, digest(&mut entry).map_err(read)?);
        }
    }
    Ok(out)
}

/// The inventory of the root filesystem tarball at `path`, whose own
/// SHA-256 is `sha256` (`None`: not said in the SBOM). `archives` are the role's release archives, known
/// only to the build (the image keeps what they unpacked, not their
/// bytes; `None`: not known); `created` the SBOM's time, the newest modification time in the
/// tarball when `None` (mmdebstrap clamps every time to the build's
/// `SOURCE_DATE_EPOCH`, so the two agree).
pub fn inventory(
    path: &Path,
    sha256: Option<&str>,
    archives: Option<Vec<Archive>>,
    created: Option<i64>,
) -> Result<Inventory, Error> {
    let not = |what: &str| Error::NotAnImage {
        path: path.to_path_buf(),
        what: what.to_string(),
    };
    let mut found = scan(path)?;
    let config = found
        .config
        .take()
        .ok_or_else(|| not("it has no /etc/imagectl/image.json"))?;
    let status = found
        .status
        .as_deref()
        .ok_or_else(|| not("it has no dpkg database (var/lib/dpkg/status)"))?;

    let mut license_refs = BTreeMap::new();
    let packages = dpkg::installed(status)
        .into_iter()
        .map(|p| {
            let declared = found
                .copyright(&p.name)
                .and_then(|t| copyright::declared(t));
            if let Some(d) = &declared {
                for (id, name) in &d.refs {
                    // The same reference from several spellings: the
                    // smallest name, whatever the order of the packages.
                    license_refs
                        .entry(id.clone())
                        .and_modify(|n: &mut String| {
                            if name < n {
                                *n = name.clone();
                            }
                        })
                        .or_insert_with(|| name.clone());
                }
            }
            Package {
                source: Some((p.source, p.source_version)),
                license: declared.map(|d| d.expression),
                name: p.name,
                version: Some(p.version),
                arch: Some(p.arch),
            }
        })
        .collect();

    let missing: BTreeSet<String> = manifest_paths(&config)
        .into_iter()
        .filter(|p| !found.digests.contains_key(p))
        .collect();
    let mut digests = std::mem::take(&mut found.digests);
    if !missing.is_empty() {
        digests.extend(self::digests(path, &missing)?);
    }
    // SHA-1s are filled in below, from the tarball's bytes.
    let files = baked_files(&config.manifest, &config.boot.templates, |_| {
        Ok(String::new())
    })
    .map_err(|e| Error::Read {
        path: path.to_path_buf(),
        source: e.source,
    })?;
    let mut checked = Vec::new();
    for mut f in files {
        let Some((sha1, sha256)) = digests.get(f.path.trim_start_matches('/')) else {
            return Err(not(&format!("{} of its manifest is not in it", f.path)));
        };
        if *sha256 != f.sha256 {
            return Err(Error::Mismatch {
                path: path.to_path_buf(),
                file: f.path,
                manifest: f.sha256,
                found: sha256.clone(),
            });
        }
        f.sha1 = sha1.clone();
        checked.push(f);
    }
    let created = created.unwrap_or_else(|| i64::try_from(found.newest).unwrap_or(0));
    Ok(Inventory {
        role: config.role,
        hash: config.hash,
        target: Kind::Local,
        created,
        packages_from: PackagesFrom::Rootfs,
        packages,
        files: checked,
        archives,
        license_refs,
        artifact_sha256: sha256.map(String::from),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_resolve_inside_the_root() {
        assert_eq!(
            resolve("usr/share/doc/libgcc-s1", "gcc-12-base").as_deref(),
            Some("usr/share/doc/gcc-12-base")
        );
        assert_eq!(
            resolve("usr/share/doc/a/copyright", "../b/copyright").as_deref(),
            Some("usr/share/doc/b/copyright")
        );
        assert_eq!(
            resolve("usr/share/doc/a", "/usr/share/doc/b").as_deref(),
            Some("usr/share/doc/b")
        );
        assert_eq!(resolve("a", "../../x"), None);
    }
}
