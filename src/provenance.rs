//! Signed provenance of builds: AWS builds sign their statement with the
//! KMS key `[provenance] kms_key` names and keep it beside the role's
//! channels (`PREFIX/ROLE/provenance/HASH`); local builds sign with a local
//! Ed25519 key and keep it beside the tarball. `verify`, `publish` and
//! `promote` check an image against it.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use ring::signature::{Ed25519KeyPair, KeyPair as _, UnparsedPublicKey, ED25519};

use imagectl_core::digest::{file_sha256, sha256};
use imagectl_core::hash::ContentHash;
use imagectl_core::names::{provenance_parameter, tags};
use imagectl_core::project::Project;
use imagectl_core::provenance::{self, Build, Claims, Envelope, Subject};
use imagectl_core::record;

use crate::aws::{self, ImageInfo, Session, SigningKey};

/// Errors signing or verifying.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Aws(#[from] aws::Error),
    /// The KMS key of the settings is no asymmetric signing key.
    #[error(
        "`[provenance] kms_key = \"{key}\"` is no key imagectl can sign with: {why} \
         (it takes an enabled asymmetric SIGN_VERIFY key in {region}: ECC_NIST_P256, ECC_NIST_P384 or RSA)"
    )]
    NotSigningKey {
        key: String,
        region: String,
        why: String,
    },
    /// No KMS key is configured, and something needs one.
    #[error(
        "no signing key: set `[provenance] kms_key` in imagectl.toml to an asymmetric KMS key \
         (SIGN_VERIFY) in the home region"
    )]
    NotConfigured,
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// The local key file is not an Ed25519 key.
    #[error("{}: not an Ed25519 PKCS#8 key; move it away and a build makes a new one", path.display())]
    BadLocalKey { path: PathBuf },
    /// The image does not verify: every reason.
    #[error("{what} does not verify:\n  {}", reasons.join("\n  "))]
    Unverified { what: String, reasons: Vec<String> },
}

impl Error {
    /// Whether the user fixes it (exit 2): a key that is missing or wrong.
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            Error::NotConfigured | Error::NotSigningKey { .. } | Error::BadLocalKey { .. }
        )
    }
}

fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// What a verified image is.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Verified {
    /// The image: `REGION/AMI` or the tarball's path.
    pub image: String,
    pub role: String,
    pub hash: String,
    /// The key that signed it.
    pub keyid: String,
    /// Where the statement is kept.
    pub statement: String,
    pub sbom_sha256: String,
    pub commit: Option<String>,
    pub builder: BTreeMap<String, String>,
    /// How many inputs the statement binds.
    pub inputs: usize,
}

impl std::fmt::Display for Verified {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "verified {}: {} {} signed by {}, {} inputs, SBOM {}, commit {}",
            self.image,
            self.role,
            imagectl_core::hash::short(&self.hash),
            self.keyid,
            self.inputs,
            imagectl_core::hash::short(&self.sbom_sha256),
            self.commit.as_deref().unwrap_or("unknown"),
        )
    }
}

/// What one AWS or local build tells its statement, besides the hash.
pub struct Made<'a> {
    pub hash: &'a ContentHash,
    pub commit: String,
    pub packer: Option<String>,
    pub sbom_sha256: &'a str,
    pub build_id: &'a str,
    pub started: i64,
}

impl Made<'_> {
    fn statement(&self, target: &str, subjects: Vec<Subject>) -> Vec<u8> {
        provenance::statement(&Build {
            hash: self.hash,
            target,
            commit: &self.commit,
            imagectl: env!("CARGO_PKG_VERSION"),
            packer: self.packer.clone(),
            sbom_sha256: self.sbom_sha256,
            build_id: self.build_id,
            started: self.started,
            finished: imagectl_core::time::now_secs(),
            subjects,
        })
    }
}

/// The KMS key of the settings in the home region, resolved.
async fn kms_key(project: &Project, session: &Session) -> Result<(aws::Kms, SigningKey), Error> {
    let key = project
        .settings
        .provenance
        .kms_key
        .as_deref()
        .ok_or(Error::NotConfigured)?;
    let home = &project.settings.aws.region;
    let kms = session.kms(home);
    let signing = kms
        .signing_key(key)
        .await?
        .map_err(|why| Error::NotSigningKey {
            key: key.to_string(),
            region: home.clone(),
            why,
        })?;
    Ok((kms, signing))
}

/// Signs the statement of an AWS build that made `amis` (AMI per region)
/// and keeps it beside the role's channels; returns the parameter and the
/// envelope, or `None` when no key is configured (said as a warning).
pub async fn sign_amis(
    project: &Project,
    session: &Session,
    made: &Made<'_>,
    amis: &BTreeMap<String, String>,
) -> Result<Option<(String, String)>, Error> {
    if project.settings.provenance.kms_key.is_none() {
        tracing::warn!(
            "{}: not signed: `[provenance] kms_key` is not set (docs/provenance.md)",
            made.hash.role
        );
        return Ok(None);
    }
    let (kms, key) = kms_key(project, session).await?;
    let subjects = amis
        .iter()
        .map(|(region, id)| Subject::Ami {
            region: region.clone(),
            id: id.clone(),
        })
        .collect();
    let statement = made.statement("aws", subjects);
    let sig = kms
        .sign(&key, &provenance::pae(provenance::PAYLOAD_TYPE, &statement))
        .await?;
    let envelope = Envelope::new(&statement, &key.arn, &sig).to_json();
    let name = provenance_parameter(
        &project.settings.publish.prefix,
        &made.hash.role,
        made.hash.hash.as_str(),
    );
    session
        .ssm(&project.settings.aws.region)
        .put_string(&name, &envelope)
        .await?;
    Ok(Some((name, envelope)))
}

/// Where the envelope of a local tarball is kept: beside it.
pub fn tarball_envelope(tar: &Path) -> PathBuf {
    tar.with_extension("intoto.json")
}

/// Signs the statement of a local build that made `tar` (whose bytes have
/// `tar_sha256`, under its final name) with the local key, made on first
/// use; writes the envelope beside it.
pub fn sign_tarball(
    project: &Project,
    made: &Made<'_>,
    tar: &Path,
    tar_sha256: &str,
) -> Result<PathBuf, Error> {
    let key = LocalKey::load_or_make(&project.root.join(&project.settings.provenance.local_key))?;
    let name = file_name(tar);
    let statement = made.statement(
        "local",
        vec![Subject::File {
            name,
            sha256: tar_sha256.to_string(),
        }],
    );
    let sig = key.sign(&provenance::pae(provenance::PAYLOAD_TYPE, &statement));
    let path = tarball_envelope(tar);
    let text = Envelope::new(&statement, &key.id(), &sig).to_json() + "\n";
    imagectl_core::fsutil::write_atomic(&path, text.as_bytes()).map_err(io("write", &path))?;
    Ok(path)
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Verifies a local tarball: the local key's signature, that the statement
/// names these bytes, and the SBOM beside it.
pub fn verify_tarball(project: &Project, tar: &Path) -> Result<Verified, Error> {
    let what = tar.display().to_string();
    let unverified = |reasons: Vec<String>| Error::Unverified {
        what: what.clone(),
        reasons,
    };
    let key_path = project.root.join(&project.settings.provenance.local_key);
    if !key_path.is_file() {
        return Err(unverified(vec![format!(
            "there is no local signing key at {} (local builds make it)",
            key_path.display()
        )]));
    }
    let key = LocalKey::load_or_make(&key_path)?;
    let env_path = tarball_envelope(tar);
    let text = match std::fs::read_to_string(&env_path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(unverified(vec![format!(
                "no provenance beside it ({} is missing: built before builds signed, or not by imagectl)",
                env_path.display()
            )]))
        }
        Err(e) => return Err(io("read", &env_path)(e)),
    };
    let (envelope, claims) = open(&text, |keyid, signed, sig| {
        if keyid != key.id() {
            return Err(format!(
                "signed by `{keyid}`, not by the local key `{}` ({})",
                key.id(),
                key_path.display()
            ));
        }
        if !key.verifies(signed, sig) {
            return Err(format!(
                "the signature does not verify with the local key {}: the statement was changed after it was signed",
                key.id()
            ));
        }
        Ok(())
    })
    .map_err(|r| unverified(vec![r]))?;
    let mut reasons = Vec::new();
    let sha = file_sha256(tar).map_err(io("read", tar))?;
    let subject = Subject::File {
        name: file_name(tar),
        sha256: sha.clone(),
    };
    if !claims.names(&subject) {
        reasons.push(format!(
            "the statement does not name these bytes ({} with SHA-256 {sha}): it names {}",
            subject.name(),
            names(&claims)
        ));
    }
    // A tarball or a disk image (`--target disk`): the build's name, with
    // the extension the file has.
    let extension = if file_name(tar).ends_with(".raw") {
        "raw"
    } else {
        "tar"
    };
    let expected_name = format!(
        "{}-{}.{extension}",
        claims.role,
        imagectl_core::hash::short(&claims.content_hash)
    );
    if file_name(tar) != expected_name {
        reasons.push(format!(
            "the statement is of {expected_name}, not of {}",
            file_name(tar)
        ));
    }
    let sbom = imagectl_core::sbom::store::local_path(tar);
    check_sbom_file(&sbom, &claims, &mut reasons);
    if !reasons.is_empty() {
        return Err(unverified(reasons));
    }
    Ok(verified(
        what,
        &envelope,
        &claims,
        env_path.display().to_string(),
    ))
}

/// Checks the SBOM file at `path` against the statement's digest.
fn check_sbom_file(path: &Path, claims: &Claims, reasons: &mut Vec<String>) {
    match file_sha256(path) {
        Ok(sha) if sha == claims.sbom_sha256 => {}
        Ok(sha) => reasons.push(format!(
            "the SBOM {} has SHA-256 {sha}, the statement says {}",
            path.display(),
            claims.sbom_sha256
        )),
        Err(e) => reasons.push(format!("cannot read the SBOM {}: {e}", path.display())),
    }
}

fn names(claims: &Claims) -> String {
    let names: Vec<&str> = claims.subjects.keys().map(String::as_str).collect();
    if names.is_empty() {
        "nothing".to_string()
    } else {
        names.join(", ")
    }
}

fn verified(image: String, envelope: &Envelope, claims: &Claims, statement: String) -> Verified {
    Verified {
        image,
        role: claims.role.clone(),
        hash: claims.content_hash.clone(),
        keyid: envelope
            .signatures
            .first()
            .map(|s| s.keyid.clone())
            .unwrap_or_default(),
        statement,
        sbom_sha256: claims.sbom_sha256.clone(),
        commit: claims.commit.clone(),
        builder: claims.builder.clone(),
        inputs: claims.inputs.len(),
    }
}

/// Parses an envelope, checks its signature with `check` (key ID, signed
/// bytes, signature), and reads its claims; the one reason it fails.
fn open(
    text: &str,
    check: impl FnOnce(&str, &[u8], &[u8]) -> Result<(), String>,
) -> Result<(Envelope, Claims), String> {
    let (envelope, signed, keyid, sig) = parts(text)?;
    check(&keyid, &signed, &sig)?;
    let claims = provenance::claims(&envelope.statement()?)?;
    Ok((envelope, claims))
}

/// An envelope, the bytes its signature covers, its key ID and signature.
type Parts = (Envelope, Vec<u8>, String, Vec<u8>);

fn parts(text: &str) -> Result<Parts, String> {
    let envelope = Envelope::parse(text.trim())?;
    let signed = envelope.signed_bytes()?;
    let (keyid, sig) = envelope.signature()?;
    Ok((envelope, signed, keyid, sig))
}

/// Verifies AMIs against their signed statements with the KMS key of the
/// settings, resolved once; each statement is read and its signature
/// checked once, however many regions' images it names.
pub struct Verifier<'a> {
    project: &'a Project,
    session: &'a Session,
    kms: aws::Kms,
    key: SigningKey,
    /// Statements checked so far, by parameter: the envelope and its
    /// claims, or why it does not verify.
    checked: BTreeMap<String, Result<(Envelope, Claims), String>>,
}

impl<'a> Verifier<'a> {
    /// A verifier with the key of `[provenance] kms_key`.
    pub async fn new(project: &'a Project, session: &'a Session) -> Result<Verifier<'a>, Error> {
        let (kms, key) = kms_key(project, session).await?;
        Ok(Verifier {
            project,
            session,
            kms,
            key,
            checked: BTreeMap::new(),
        })
    }

    /// The statement kept at `name`, its signature checked.
    async fn statement(&mut self, name: &str) -> Result<Result<(Envelope, Claims), String>, Error> {
        if let Some(done) = self.checked.get(name) {
            return Ok(done.clone());
        }
        let home = &self.project.settings.aws.region;
        let done = match self.session.ssm(home).get(name).await? {
            None => Err(format!(
                "no provenance at {name} (built before builds signed, or not by imagectl)"
            )),
            Some(text) => match parts(&text) {
                Err(why) => Err(why),
                // KMS is asked only once the envelope parses.
                Ok((envelope, signed, _, sig)) => {
                    if self.kms.verify(&self.key, &signed, &sig).await? {
                        envelope
                            .statement()
                            .and_then(|s| provenance::claims(&s))
                            .map(|claims| (envelope, claims))
                    } else {
                        Err(format!(
                            "the signature of {name} does not verify with {}: the statement was changed after it was signed, or another key signed it",
                            self.key.arn
                        ))
                    }
                }
            },
        };
        self.checked.insert(name.to_string(), done.clone());
        Ok(done)
    }

    /// Verifies `image` (in `region`) against its signed statement: the
    /// KMS signature, that the statement names this AMI, that the image's
    /// tags agree with it, and the SBOM digest (and the SBOM file, where
    /// this checkout's record keeps it).
    pub async fn image(&mut self, region: &str, image: &ImageInfo) -> Result<Verified, Error> {
        let what = format!("{} in {region}", image.id);
        let unverified = |reasons: Vec<String>| Error::Unverified {
            what: what.clone(),
            reasons,
        };
        let (Some(role), Some(hash)) = (image.tags.get(tags::ROLE), image.tags.get(tags::HASH))
        else {
            return Err(unverified(vec![format!(
                "it carries no `{}` and `{}` tags: not an image imagectl built",
                tags::ROLE,
                tags::HASH
            )]));
        };
        let name = provenance_parameter(&self.project.settings.publish.prefix, role, hash);
        let (envelope, claims) = self
            .statement(&name)
            .await?
            .map_err(|r| unverified(vec![r]))?;
        let mut reasons = Vec::new();
        let subject = Subject::Ami {
            region: region.to_string(),
            id: image.id.clone(),
        };
        if !claims.names(&subject) {
            reasons.push(format!(
                "the statement does not name {} with content hash {}: it names {}",
                subject.name(),
                imagectl_core::hash::short(hash),
                names(&claims)
            ));
        }
        let commit = claims
            .commit
            .clone()
            .unwrap_or_else(|| "unknown".to_string());
        let stated = [
            (tags::ROLE, Some(claims.role.as_str())),
            (tags::HASH, Some(claims.content_hash.as_str())),
            (tags::BUILD, Some(claims.build_id.as_str())),
            (tags::COMMIT, Some(commit.as_str())),
            (
                tags::VERSION,
                claims.builder.get("imagectl").map(String::as_str),
            ),
            (tags::SBOM, Some(claims.sbom_sha256.as_str())),
        ];
        for (key, said) in stated {
            let tag = image.tags.get(key).map(String::as_str);
            if tag != said {
                reasons.push(format!(
                    "tag `{key}` is {}, the statement says {}",
                    tag.map_or("missing".to_string(), |t| format!("`{t}`")),
                    said.map_or("nothing".to_string(), |s| format!("`{s}`"))
                ));
            }
        }
        if let Some(sbom) = recorded_sbom(self.project, role, hash) {
            check_sbom_file(&sbom, &claims, &mut reasons);
        }
        if !reasons.is_empty() {
            return Err(unverified(reasons));
        }
        Ok(verified(
            format!("{region}/{}", image.id),
            &envelope,
            &claims,
            name,
        ))
    }
}

/// The SBOM this checkout's record keeps for an AWS build of `hash`.
fn recorded_sbom(project: &Project, role: &str, hash: &str) -> Option<PathBuf> {
    let records = record::load(&project.root).ok()?;
    records
        .iter()
        .rev()
        .find(|r| r.role == role && r.hash == hash && r.target == record::Kind::Aws)
        .and_then(|r| r.sbom.as_ref())
        .map(|s| project.root.join(&s.path))
        .filter(|p| p.is_file())
}

/// Verifies each image a publish would point a channel at (region →
/// image), unless `allow_unverified`; without a KMS key configured, says
/// so and lets them through.
pub async fn require(
    project: &Project,
    session: &Session,
    images: &[(String, ImageInfo)],
    allow_unverified: bool,
) -> Result<(), Error> {
    if project.settings.provenance.kms_key.is_none() {
        tracing::warn!(
            "publishing without verifying: `[provenance] kms_key` is not set, so images are not signed (docs/provenance.md)"
        );
        return Ok(());
    }
    let mut verifier = Verifier::new(project, session).await?;
    for (region, image) in images {
        match verifier.image(region, image).await {
            Ok(v) => tracing::info!("{v}"),
            Err(e @ Error::Unverified { .. }) if allow_unverified => {
                tracing::warn!("--allow-unverified: {e}");
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The Ed25519 key local builds sign with.
pub struct LocalKey {
    pair: Ed25519KeyPair,
}

impl LocalKey {
    /// The key at `path`; a new one, written there readable by its owner
    /// only, when there is none.
    pub fn load_or_make(path: &Path) -> Result<LocalKey, Error> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Self::make(path)?,
            Err(e) => return Err(io("read", path)(e)),
        };
        let pair = Ed25519KeyPair::from_pkcs8(&bytes).map_err(|_| Error::BadLocalKey {
            path: path.to_path_buf(),
        })?;
        Ok(LocalKey { pair })
    }

    fn make(path: &Path) -> Result<Vec<u8>, Error> {
        use std::os::unix::fs::OpenOptionsExt as _;
        let rng = ring::rand::SystemRandom::new();
        let doc = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| Error::BadLocalKey {
            path: path.to_path_buf(),
        })?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io("create", dir))?;
        }
        let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io("create", &tmp))?;
        f.write_all(doc.as_ref())
            .and_then(|_| f.sync_all())
            .map_err(io("write", &tmp))?;
        // Never over a key another build made meanwhile.
        std::fs::hard_link(&tmp, path)
            .or_else(|e| {
                if e.kind() == std::io::ErrorKind::AlreadyExists {
                    Ok(())
                } else {
                    Err(e)
                }
            })
            .map_err(io("write", path))?;
        let _ = std::fs::remove_file(&tmp);
        tracing::info!(
            "made a local signing key at {} (Ed25519; keep it: it verifies this machine's tarballs)",
            path.display()
        );
        std::fs::read(path).map_err(io("read", path))
    }

    /// `ed25519:` and the first 16 hex digits of the SHA-256 of its public key.
    pub fn id(&self) -> String {
        format!("ed25519:{}", &sha256(self.pair.public_key().as_ref())[..16])
    }

    fn sign(&self, message: &[u8]) -> Vec<u8> {
        self.pair.sign(message).as_ref().to_vec()
    }

    fn verifies(&self, message: &[u8], sig: &[u8]) -> bool {
        UnparsedPublicKey::new(&ED25519, self.pair.public_key().as_ref())
            .verify(message, sig)
            .is_ok()
    }
}

/// The checkout's commit, with `-dirty` when it has uncommitted changes.
pub fn commit(root: &Path) -> String {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .current_dir(root)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    match git(&["rev-parse", "HEAD"]) {
        Some(head) => {
            let dirty = git(&["status", "--porcelain"]).is_some_and(|s| !s.is_empty());
            if dirty {
                format!("{head}-dirty")
            } else {
                head
            }
        }
        None => "unknown".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_local_key_is_made_once_private_and_signs_what_it_verifies() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k/provenance.key");
        let a = LocalKey::load_or_make(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let b = LocalKey::load_or_make(&path).unwrap();
        assert_eq!(a.id(), b.id());
        let sig = a.sign(b"statement");
        assert!(b.verifies(b"statement", &sig));
        assert!(!b.verifies(b"statemenT", &sig));
        std::fs::write(&path, b"not a key").unwrap();
        assert!(matches!(
            LocalKey::load_or_make(&path),
            Err(Error::BadLocalKey { .. })
        ));
    }
}
