//! `--format oci`: a local image as an OCI image archive next to its
//! tarball (one uncompressed layer, the root filesystem; `/sbin/init` as
//! the command), archived deterministically, which `podman load`, `docker
//! load` and `skopeo` accept.

use std::path::{Path, PathBuf};
use std::process::Command;

use imagectl_core::digest::sha256;
use imagectl_core::target::Target;
use imagectl_core::time;
use serde_json::{json, Value};

use imagectl_core::fsutil::{io_error, IoError};

use super::{Error, LocalImage};

/// Writes `ROLE-HASH12.oci.tar` next to `image`'s tarball; returns its path.
pub fn write(t: &Target, image: &LocalImage) -> Result<PathBuf, Error> {
    let epoch = t.source_date_epoch().unwrap_or(0);
    let dir = image.path.parent().unwrap_or(Path::new(".")).to_path_buf();
    let stem = image
        .path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let out = dir.join(format!("{stem}.oci.tar"));
    let layout = dir.join(format!(".oci-{}-{}", stem, std::process::id()));
    let _ = std::fs::remove_dir_all(&layout);
    let result = lay_out(t, image, &layout, epoch).and_then(|()| {
        let partial = dir.join(format!(".{stem}.oci.tar.partial"));
        archive(&layout, &partial, epoch)?;
        std::fs::rename(&partial, &out).map_err(io_error("rename into", &out))?;
        Ok(())
    });
    let _ = std::fs::remove_dir_all(&layout);
    result?;
    Ok(out)
}

/// Writes the OCI image layout of `image` into `layout`: the tarball as
/// its one layer (linked, not copied), its config, manifest and index.
fn lay_out(t: &Target, image: &LocalImage, layout: &Path, epoch: i64) -> Result<(), Error> {
    let blobs = layout.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).map_err(io_error("create", &blobs))?;
    let layer_size = std::fs::metadata(&image.path)
        .map_err(io_error("read", &image.path))?
        .len();
    let layer_blob = blobs.join(&image.sha256);
    if std::fs::hard_link(&image.path, &layer_blob).is_err() {
        std::fs::copy(&image.path, &layer_blob).map_err(io_error("copy", &image.path))?;
    }
    let blob = |json: Value| -> Result<(String, u64), Error> {
        let bytes = serde_json::to_vec(&json).unwrap_or_default();
        let digest = sha256(&bytes);
        let path = blobs.join(&digest);
        std::fs::write(&path, &bytes).map_err(io_error("write", &path))?;
        Ok((digest, bytes.len() as u64))
    };
    let created = time::iso(epoch);
    let (config, config_size) = blob(json!({
        "created": created,
        "architecture": t.role.image.arch.debian(),
        "os": "linux",
        "config": {"Cmd": ["/sbin/init"], "StopSignal": "SIGRTMIN+3", "Labels": {
            "org.opencontainers.image.title": image.role,
            "org.opencontainers.image.revision": image.hash,
        }},
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{}", image.sha256)]},
        "history": [{"created": created, "created_by": "imagectl build --target local --format oci"}],
    }))?;
    let (manifest, manifest_size) = blob(json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": format!("sha256:{config}"), "size": config_size},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": format!("sha256:{}", image.sha256), "size": layer_size}],
    }))?;
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": format!("sha256:{manifest}"),
            "size": manifest_size,
            "annotations": {"org.opencontainers.image.ref.name": format!("{}:{}", image.role, image.hash.short())},
        }],
    });
    let index_path = layout.join("index.json");
    std::fs::write(&index_path, serde_json::to_vec(&index).unwrap_or_default())
        .map_err(io_error("write", &index_path))?;
    let marker = layout.join("oci-layout");
    std::fs::write(&marker, br#"{"imageLayoutVersion":"1.0.0"}"#)
        .map_err(io_error("write", &marker))?;
    Ok(())
}

/// Archives `layout` into `out`: names sorted, owners and times fixed, so
/// the same image gives the same bytes.
fn archive(layout: &Path, out: &Path, epoch: i64) -> Result<(), Error> {
    let status = Command::new("tar")
        .args([
            "--sort=name",
            "--owner=0",
            "--group=0",
            "--numeric-owner",
            "--hard-dereference",
        ])
        .arg(format!("--mtime=@{epoch}"))
        .arg("-cf")
        .arg(out)
        .arg("-C")
        .arg(layout)
        .args(["oci-layout", "index.json", "blobs"])
        .status()
        .map_err(io_error("run", Path::new("tar")))?;
    if status.success() {
        Ok(())
    } else {
        Err(Error::Io(IoError {
            action: "archive",
            path: out.to_path_buf(),
            source: std::io::Error::other(status.to_string()),
        }))
    }
}
