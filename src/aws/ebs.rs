//! Raw disk images written straight into new EBS snapshots with the EBS
//! direct APIs (StartSnapshot, PutSnapshotBlock, CompleteSnapshot), only
//! their blocks that hold data; and waiting for such a snapshot to complete.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_ebs::primitives::ByteStream;
use aws_sdk_ebs::types::{ChecksumAggregationMethod, ChecksumAlgorithm, Status, Tag};
use aws_sdk_ec2::types::Filter;
use aws_smithy_types::base64;
use imagectl_core::digest::hex;
use sha2::{Digest, Sha256};
use tokio::task::JoinSet;

use super::error::err;
use super::{Ec2, Error};

/// The size of a snapshot block: the only one the EBS direct APIs take.
pub const BLOCK_SIZE: u64 = 512 * 1024;

/// The largest volume StartSnapshot makes a snapshot of, in GiB (64 TiB).
pub const MAX_VOLUME_GIB: i64 = 65_536;

/// Blocks read and sent at once: enough to keep a runner's uplink busy,
/// with at most 4 MiB of the image in memory.
const PARALLEL_PUTS: usize = 8;

/// Attempts at a block EBS says belongs to no snapshot: right after
/// StartSnapshot it may not know the new snapshot yet everywhere.
const NOT_FOUND_ATTEMPTS: u32 = 6;

const GIB: u64 = 1 << 30;

/// The EBS direct APIs in one region, with EC2 for what they leave to it
/// (deleting a snapshot, seeing it complete).
#[derive(Debug, Clone)]
pub struct Ebs {
    pub(super) client: aws_sdk_ebs::Client,
    pub(super) ec2: Ec2,
    /// The region.
    pub region: String,
}

/// A raw disk image to upload, and the snapshot to make of it.
#[derive(Debug, Clone)]
pub struct Upload<'a> {
    /// The raw disk image, a regular file; its holes are skipped unread.
    pub path: &'a Path,
    /// The image's SHA-256 (hex), when the caller has it already (a build
    /// records it): the image is then not hashed whole again.
    pub sha256: Option<&'a str>,
    /// The volume size in GiB; `None`: the image's size rounded up to a GiB.
    pub volume_size_gib: Option<i64>,
    /// The snapshot's description.
    pub description: &'a str,
    /// The snapshot's tags, set as it is created.
    pub tags: &'a BTreeMap<String, String>,
    /// Whether to encrypt the snapshot: with `kms_key_arn`, else with the
    /// account's default EBS key.
    pub encrypted: bool,
    /// The KMS key to encrypt with, as an ARN (StartSnapshot takes no
    /// alias or key ID); implies `encrypted`.
    pub kms_key_arn: Option<&'a str>,
    /// Minutes after which EBS cancels a snapshot that is not completed
    /// (60 is EBS's default): an upload that dies leaves nothing forever.
    pub timeout_minutes: i32,
}

/// What an upload did.
#[derive(Debug, Clone, PartialEq)]
pub struct UploadReport {
    /// The new snapshot, `snap-...`: completed on the EBS side, and
    /// `pending` in EC2 until [`Ebs::wait_completed`] sees it `completed`.
    pub snapshot_id: String,
    /// The volume size it was made with, in GiB.
    pub volume_size_gib: i64,
    /// The image's size in 512 KiB blocks.
    pub blocks_total: u64,
    /// The blocks sent: those holding anything but zeros.
    pub blocks_written: u64,
    /// The bytes sent (whole blocks).
    pub bytes_written: u64,
    /// How long it took, reading the image included.
    pub secs: f64,
}

/// Why an upload failed. Once its snapshot is started, a failed upload
/// deletes it: the snapshot is named only when that failed too.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// The image cannot be read.
    #[error("cannot read the disk image `{}`: {source}", path.display())]
    Read {
        /// The image.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A block read for sending is not what it was when the image was
    /// first read: something is writing the image.
    #[error("the disk image `{}` changed while it was being uploaded (block {block}); build it again and let nothing else write it", path.display())]
    Changed {
        /// The image.
        path: PathBuf,
        /// The block that changed.
        block: u64,
    },
    /// The volume size asked for cannot hold the image.
    #[error("the disk image `{}` needs a volume of at least {needed} GiB, not {requested} GiB", path.display())]
    TooSmall {
        /// The image.
        path: PathBuf,
        /// The size asked for, in GiB.
        requested: i64,
        /// The image's size rounded up, in GiB.
        needed: i64,
    },
    /// The volume would be larger than EBS snapshots go.
    #[error("the disk image `{}` needs a volume of {gib} GiB; EBS snapshots hold at most {MAX_VOLUME_GIB} GiB", path.display())]
    TooLarge {
        /// The image.
        path: PathBuf,
        /// The volume size, in GiB.
        gib: i64,
    },
    /// An AWS call failed.
    #[error(transparent)]
    Aws(#[from] Error),
    /// The upload failed, and deleting its unfinished snapshot failed too.
    #[error(
        "{error}; deleting the unfinished snapshot `{snapshot_id}` failed too ({delete}): \
         delete it with `aws ec2 delete-snapshot --region {} --snapshot-id {snapshot_id}`",
        delete.region
    )]
    LeftBehind {
        /// The snapshot left.
        snapshot_id: String,
        /// Why the upload failed.
        error: Box<UploadError>,
        /// Why it could not be deleted.
        delete: Error,
    },
}

impl UploadError {
    /// Whether the user fixes it (exit 2): a volume size that does not fit.
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            UploadError::TooSmall { .. } | UploadError::TooLarge { .. }
        )
    }
}

/// A block of the image holding data, and the SHA-256 of its 512 KiB (the
/// last block of an image padded with zeros, as it is sent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct BlockDigest {
    index: i32,
    sha256: [u8; 32],
}

/// An image as read before anything is sent.
#[derive(Debug)]
struct Scan {
    /// Its size in bytes.
    size: u64,
    /// The SHA-256 of its bytes, holes read as zeros.
    sha256: [u8; 32],
    /// Its blocks holding anything but zeros, in ascending order.
    blocks: Vec<BlockDigest>,
}

impl Ebs {
    /// Uploads the raw disk image `upload.path` into a new snapshot: only
    /// its blocks holding data, eight at a time, each with its
    /// SHA-256, which EBS checks, and the snapshot completed with the
    /// checksum of them all. `progress(written, to_write)` is called as
    /// blocks are sent. The image is read once first: for its SHA-256,
    /// from which the StartSnapshot client token comes, so that a start
    /// sent again is the same start to EBS.
    pub async fn upload(
        &self,
        upload: &Upload<'_>,
        progress: &(dyn Fn(u64, u64) + Sync),
    ) -> Result<UploadReport, UploadError> {
        let started = Instant::now();
        let path = upload.path;
        let file = File::open(path).map_err(|source| read_error(path, source))?;
        let len = file
            .metadata()
            .map_err(|source| read_error(path, source))?
            .len();
        let volume_size_gib = volume_size(path, upload.volume_size_gib, len)?;
        let file = Arc::new(file);
        let known = upload.sha256.and_then(digest_of_hex);
        let scanned = {
            let file = Arc::clone(&file);
            tokio::task::spawn_blocking(move || scan(&file, known.is_none())).await
        };
        let mut scan = scanned
            .map_err(|e| read_error(path, io::Error::other(e)))?
            .map_err(|source| read_error(path, source))?;
        if let Some(sha256) = known {
            scan.sha256 = sha256;
        }
        if scan.size != len {
            return Err(UploadError::Changed {
                path: path.to_path_buf(),
                block: len.min(scan.size) / BLOCK_SIZE,
            });
        }
        let token = client_token(&scan, upload, volume_size_gib);
        let snapshot_id = self.start(upload, volume_size_gib, token).await?;
        let writer = BlockWriter {
            client: self.client.clone(),
            region: self.region.as_str().into(),
            snapshot_id: snapshot_id.as_str().into(),
            path: path.into(),
            file,
            size: scan.size,
        };
        let written = async {
            writer.put_all(&scan.blocks, progress).await?;
            self.complete(&snapshot_id, &scan.blocks).await
        };
        if let Err(error) = written.await {
            return Err(self.abandon(&snapshot_id, error).await);
        }
        let blocks_written = scan.blocks.len() as u64;
        Ok(UploadReport {
            snapshot_id,
            volume_size_gib,
            blocks_total: scan.size.div_ceil(BLOCK_SIZE),
            blocks_written,
            bytes_written: blocks_written * BLOCK_SIZE,
            secs: started.elapsed().as_secs_f64(),
        })
    }

    /// Waits until EC2 reports the snapshot `completed`, polling, for at
    /// most `timeout`. (EBS keeps working on a snapshot after
    /// CompleteSnapshot; an image can be registered from it only then.)
    pub async fn wait_completed(&self, snapshot_id: &str, timeout: Duration) -> Result<(), Error> {
        let start = Instant::now();
        let mut delay = Duration::from_secs(2);
        loop {
            let state = snapshot_state(&self.ec2, snapshot_id).await?;
            match state.as_ref() {
                Some(s) if s.state == "completed" => return Ok(()),
                Some(s) if s.state == "error" => {
                    return Err(Error::other(
                        "DescribeSnapshots",
                        &self.region,
                        Some(snapshot_id),
                        format!("the snapshot failed: {}", s.message),
                    ))
                }
                _ => {}
            }
            if start.elapsed() >= timeout {
                let now = state.map_or("not found".to_string(), |s| {
                    format!("still `{}` ({})", s.state, s.progress)
                });
                return Err(Error::other(
                    "DescribeSnapshots",
                    &self.region,
                    Some(snapshot_id),
                    format!("{now} after {} s", timeout.as_secs()),
                ));
            }
            tokio::time::sleep(delay.min(timeout.saturating_sub(start.elapsed()))).await;
            delay = (delay * 2).min(Duration::from_secs(30));
        }
    }

    /// Starts the snapshot; its ID.
    async fn start(
        &self,
        upload: &Upload<'_>,
        volume_size_gib: i64,
        token: String,
    ) -> Result<String, UploadError> {
        let tags: Vec<Tag> = upload
            .tags
            .iter()
            .map(|(k, v)| Tag::builder().key(k).value(v).build())
            .collect();
        let encrypted = upload.encrypted || upload.kms_key_arn.is_some();
        let image = format!("disk image `{}`", upload.path.display());
        let out = self
            .client
            .start_snapshot()
            .volume_size(volume_size_gib)
            .description(upload.description)
            .set_tags((!tags.is_empty()).then_some(tags))
            // Only `true` is ever sent: an account that encrypts every
            // volume by default refuses `false`.
            .set_encrypted(encrypted.then_some(true))
            .set_kms_key_arn(upload.kms_key_arn.map(String::from))
            .timeout(upload.timeout_minutes)
            .client_token(token)
            .send()
            .await
            .map_err(|e| Error::new("StartSnapshot", &self.region, None, e).about(&image))?;
        let Some(id) = out.snapshot_id() else {
            let e = "EBS answered without a snapshot ID".to_string();
            return Err(Error::other("StartSnapshot", &self.region, None, e)
                .about(image)
                .into());
        };
        match out.status() {
            Some(Status::Pending) | None => Ok(id.to_string()),
            // Not one this upload may write to, nor delete.
            Some(status) => Err(Error::other(
                "StartSnapshot",
                &self.region,
                Some(id),
                format!(
                    "EBS answered with a snapshot that is `{}`, not a new `pending` one; it was left as it is",
                    status.as_str()
                ),
            )
            .into()),
        }
    }

    /// Seals the snapshot with the count and the checksum of its blocks.
    async fn complete(&self, snapshot_id: &str, blocks: &[BlockDigest]) -> Result<(), UploadError> {
        let out = self
            .client
            .complete_snapshot()
            .snapshot_id(snapshot_id)
            // At most 131072 blocks: the volume size was checked.
            .changed_blocks_count(i32::try_from(blocks.len()).unwrap_or(i32::MAX))
            .checksum(linear_checksum(blocks))
            .checksum_algorithm(ChecksumAlgorithm::ChecksumAlgorithmSha256)
            .checksum_aggregation_method(ChecksumAggregationMethod::ChecksumAggregationLinear)
            .send()
            .await
            .map_err(err("CompleteSnapshot", &self.region, Some(snapshot_id)))?;
        if out.status() == Some(&Status::Error) {
            let e = "EBS set the snapshot to `error`".to_string();
            return Err(
                Error::other("CompleteSnapshot", &self.region, Some(snapshot_id), e).into(),
            );
        }
        Ok(())
    }

    /// Deletes the snapshot of an upload that failed; the upload's error,
    /// naming the snapshot when it could not be deleted.
    async fn abandon(&self, snapshot_id: &str, error: UploadError) -> UploadError {
        match self.ec2.delete_snapshot(snapshot_id).await {
            Ok(()) => error,
            Err(delete) => UploadError::LeftBehind {
                snapshot_id: snapshot_id.to_string(),
                error: Box::new(error),
                delete,
            },
        }
    }
}

/// What one task needs to read a block and send it.
#[derive(Clone)]
struct BlockWriter {
    client: aws_sdk_ebs::Client,
    region: Arc<str>,
    snapshot_id: Arc<str>,
    path: Arc<Path>,
    file: Arc<File>,
    size: u64,
}

impl BlockWriter {
    /// Sends `blocks`, a bounded number at a time; at the first failure the
    /// others are abandoned.
    async fn put_all(
        &self,
        blocks: &[BlockDigest],
        progress: &(dyn Fn(u64, u64) + Sync),
    ) -> Result<(), UploadError> {
        let total = blocks.len() as u64;
        progress(0, total);
        let mut next = blocks.iter().copied();
        let mut running = JoinSet::new();
        let mut written = 0;
        loop {
            while running.len() < PARALLEL_PUTS {
                let Some(block) = next.next() else { break };
                running.spawn(self.clone().put(block));
            }
            let Some(joined) = running.join_next().await else {
                return Ok(());
            };
            joined.map_err(|e| read_error(&self.path, io::Error::other(e)))??;
            written += 1;
            progress(written, total);
        }
    }

    /// Reads one block, checks it is what was read first, and sends it.
    async fn put(self, block: BlockDigest) -> Result<(), UploadError> {
        let data = self.read(block).await?;
        let checksum = base64::encode(block.sha256);
        let mut attempt = 1;
        loop {
            let sent = self
                .client
                .put_snapshot_block()
                .snapshot_id(&*self.snapshot_id)
                .block_index(block.index)
                .block_data(ByteStream::from(data.clone()))
                .data_length(BLOCK_SIZE as i32)
                .checksum(&checksum)
                .checksum_algorithm(ChecksumAlgorithm::ChecksumAlgorithmSha256)
                .send()
                .await;
            let e = match sent {
                Ok(_) => return Ok(()),
                Err(e) => e,
            };
            let not_found = e
                .as_service_error()
                .is_some_and(|s| s.is_resource_not_found_exception());
            if !not_found || attempt == NOT_FOUND_ATTEMPTS {
                let what = format!("block {} of snapshot `{}`", block.index, self.snapshot_id);
                return Err(Error::new("PutSnapshotBlock", &self.region, None, e)
                    .about(what)
                    .into());
            }
            tokio::time::sleep(Duration::from_secs(2 * u64::from(attempt))).await;
            attempt += 1;
        }
    }

    /// The block's 512 KiB as they are to be sent.
    async fn read(&self, block: BlockDigest) -> Result<Vec<u8>, UploadError> {
        let index = u64::try_from(block.index).unwrap_or_default();
        let (file, size) = (Arc::clone(&self.file), self.size);
        let data = tokio::task::spawn_blocking(move || {
            let mut buf = vec![0; BLOCK_SIZE as usize];
            read_block(&file, index, size, &mut buf).map(|()| buf)
        })
        .await
        .map_err(|e| read_error(&self.path, io::Error::other(e)))?
        .map_err(|source| read_error(&self.path, source))?;
        if Sha256::digest(&data)[..] != block.sha256 {
            return Err(UploadError::Changed {
                path: self.path.to_path_buf(),
                block: index,
            });
        }
        Ok(data)
    }
}

fn read_error(path: &Path, source: io::Error) -> UploadError {
    UploadError::Read {
        path: path.to_path_buf(),
        source,
    }
}

/// The volume size to make the snapshot with, in GiB.
fn volume_size(path: &Path, requested: Option<i64>, size: u64) -> Result<i64, UploadError> {
    let needed = i64::try_from(size.div_ceil(GIB).max(1)).unwrap_or(i64::MAX);
    let gib = requested.unwrap_or(needed);
    if gib < needed {
        return Err(UploadError::TooSmall {
            path: path.to_path_buf(),
            requested: gib,
            needed,
        });
    }
    if gib > MAX_VOLUME_GIB {
        return Err(UploadError::TooLarge {
            path: path.to_path_buf(),
            gib,
        });
    }
    Ok(gib)
}

/// Reads the image once: its size, its SHA-256 (when `whole`; else
/// zeros), and its blocks holding data. Holes are found with `SEEK_DATA`
/// and hashed as the zeros they read as, without reading them; a block
/// written with zeros only is read and left out.
fn scan(file: &File, whole_hash: bool) -> io::Result<Scan> {
    let size = file.metadata()?.len();
    let total = size.div_ceil(BLOCK_SIZE);
    let mut whole = Sha256::new();
    let mut blocks = Vec::new();
    let mut buf = vec![0; BLOCK_SIZE as usize];
    let mut index = 0;
    while index < total {
        let start = index * BLOCK_SIZE;
        let end = (start + BLOCK_SIZE).min(size);
        let data = next_data(file, start)?.unwrap_or(size);
        if data >= end {
            // A hole, up to the block the next data is in.
            let next = (data / BLOCK_SIZE).clamp(index + 1, total);
            if whole_hash {
                hash_zeros(&mut whole, (next * BLOCK_SIZE).min(size) - start);
            }
            index = next;
            continue;
        }
        read_block(file, index, size, &mut buf)?;
        if whole_hash {
            whole.update(&buf[..(end - start) as usize]);
        }
        if buf.iter().any(|&b| b != 0) {
            let index = i32::try_from(index).map_err(|_| io::ErrorKind::FileTooLarge)?;
            let sha256 = Sha256::digest(&buf).into();
            blocks.push(BlockDigest { index, sha256 });
        }
        index += 1;
    }
    Ok(Scan {
        size,
        sha256: if whole_hash {
            whole.finalize().into()
        } else {
            [0; 32]
        },
        blocks,
    })
}

/// A SHA-256 written as 64 hex digits, as bytes.
fn digest_of_hex(hex: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    if hex.len() != 64 {
        return None;
    }
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Reads block `index` of an image of `size` bytes into `buf`, zeros
/// after the image's end.
fn read_block(file: &File, index: u64, size: u64, buf: &mut [u8]) -> io::Result<()> {
    let start = index * BLOCK_SIZE;
    let len = usize::try_from(size.saturating_sub(start).min(BLOCK_SIZE))
        .map_err(|_| io::ErrorKind::FileTooLarge)?;
    let (data, pad) = buf.split_at_mut(len.min(buf.len()));
    file.read_exact_at(data, start)?;
    pad.fill(0);
    Ok(())
}

/// Where the first data at or after `offset` is (`SEEK_DATA`); `None`: only
/// a hole follows. Where the file system cannot tell, `offset` itself, so
/// that everything is read. (`SEEK_HOLE` is not needed: a block is read
/// whole once any data is in it.)
fn next_data(file: &File, offset: u64) -> io::Result<Option<u64>> {
    let off = libc::off_t::try_from(offset).map_err(|_| io::ErrorKind::FileTooLarge)?;
    // SAFETY: lseek on a descriptor the borrowed file keeps open; it moves
    // only the file offset, which nothing here uses (reads are positional).
    let found = unsafe { libc::lseek(file.as_raw_fd(), off, libc::SEEK_DATA) };
    if let Ok(found) = u64::try_from(found) {
        return Ok(Some(found));
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::ENXIO) => Ok(None),
        Some(libc::EINVAL | libc::EOPNOTSUPP) => Ok(Some(offset)),
        _ => Err(e),
    }
}

/// Feeds `len` zero bytes to `hasher`.
fn hash_zeros(hasher: &mut Sha256, mut len: u64) {
    static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];
    while len > 0 {
        let n = len.min(ZEROS.len() as u64);
        hasher.update(&ZEROS[..n as usize]);
        len -= n;
    }
}

/// The checksum of a whole snapshot, as CompleteSnapshot checks it with the
/// `LINEAR` aggregation method: the SHA-256 of the blocks' SHA-256 digests
/// (32 bytes each, not their base64) concatenated in ascending block
/// order, in base64.
fn linear_checksum(blocks: &[BlockDigest]) -> String {
    let mut all = Sha256::new();
    for b in blocks {
        all.update(b.sha256);
    }
    base64::encode(all.finalize())
}

/// The StartSnapshot client token: the image's SHA-256 and every other
/// setting of the request, hashed (64 hex digits, the longest token EBS
/// takes). The same image with the same settings is the same request to
/// EBS; a changed setting makes another one (EBS refuses a token sent
/// again with other parameters).
fn client_token(scan: &Scan, upload: &Upload<'_>, volume_size_gib: i64) -> String {
    let mut h = Sha256::new();
    let mut field = |bytes: &[u8]| {
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    };
    field(b"imagectl ebs upload 1");
    field(&scan.sha256);
    field(&volume_size_gib.to_le_bytes());
    field(upload.description.as_bytes());
    for (k, v) in upload.tags {
        field(k.as_bytes());
        field(v.as_bytes());
    }
    field(&[u8::from(upload.encrypted)]);
    field(upload.kms_key_arn.unwrap_or_default().as_bytes());
    field(&upload.timeout_minutes.to_le_bytes());
    hex(&h.finalize())
}

/// A snapshot as EC2 reports it.
struct SnapshotState {
    state: String,
    progress: String,
    message: String,
}

/// The snapshot's state; `None` when EC2 does not know it (yet).
async fn snapshot_state(ec2: &Ec2, snapshot_id: &str) -> Result<Option<SnapshotState>, Error> {
    // By filter rather than by SnapshotIds: a snapshot EC2 does not know
    // yet is no match instead of an error.
    let out = ec2
        .client
        .describe_snapshots()
        .owner_ids("self")
        .filters(
            Filter::builder()
                .name("snapshot-id")
                .values(snapshot_id)
                .build(),
        )
        .send()
        .await
        .map_err(err("DescribeSnapshots", &ec2.region, Some(snapshot_id)))?;
    Ok(out.snapshots().first().map(|s| SnapshotState {
        state: s
            .state()
            .map(|s| s.as_str())
            .unwrap_or_default()
            .to_string(),
        progress: s.progress().unwrap_or_default().to_string(),
        message: s.state_message().unwrap_or("no reason given").to_string(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(index: i32, byte: u8) -> BlockDigest {
        BlockDigest {
            index,
            sha256: Sha256::digest(vec![byte; BLOCK_SIZE as usize]).into(),
        }
    }

    /// An upload can be spawned onto any thread, as builds are.
    #[allow(dead_code)]
    fn an_upload_is_send(ebs: &Ebs, upload: &Upload<'_>) {
        fn send<T: Send>(_: T) {}
        send(ebs.upload(upload, &|_, _| {}));
    }

    #[test]
    fn the_linear_checksum_hashes_the_raw_block_digests_in_block_order() {
        // Computed apart, with Python's hashlib: the SHA-256 of the two
        // 32-byte digests of 512 KiB of 0x01 and of 0x02, in base64.
        assert_eq!(
            linear_checksum(&[block(0, 1), block(2, 2)]),
            "fccGN1xyY7l5uqsw58BLULbsU8thbz9pDvzr9oCk5yk="
        );
        assert_eq!(
            base64::encode(block(0, 1).sha256),
            "M6FQvOsTwamSIx5ltPrRaBUhL8Bs20CJltMu6yzvnrs="
        );
    }

    #[test]
    fn a_sparse_image_is_read_for_its_data_blocks_and_hashed_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk.raw");
        let f = File::create(&path).unwrap();
        let b = BLOCK_SIZE;
        // Blocks 0..=6, the last one short: data in 0, zeros written in 1,
        // a little data in 2, holes in 3..=5, data at the very end of 6.
        let size = 6 * b + 1000;
        f.set_len(size).unwrap();
        f.write_all_at(&vec![7; b as usize], 0).unwrap();
        f.write_all_at(&vec![0; b as usize], b).unwrap();
        f.write_all_at(b"data", 2 * b + 4096).unwrap();
        f.write_all_at(b"end", size - 3).unwrap();
        let scan = scan(&File::open(&path).unwrap(), true).unwrap();
        assert_eq!(scan.size, size);
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(scan.sha256[..], Sha256::digest(&bytes)[..]);
        let indexes: Vec<i32> = scan.blocks.iter().map(|b| b.index).collect();
        assert_eq!(indexes, [0, 2, 6]);
        let mut last = bytes[6 * b as usize..].to_vec();
        last.resize(b as usize, 0);
        assert_eq!(scan.blocks[2].sha256[..], Sha256::digest(&last)[..]);
    }

    #[test]
    fn a_known_sha256_is_taken_and_the_image_is_not_hashed_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk.raw");
        let f = File::create(&path).unwrap();
        f.set_len(3 * BLOCK_SIZE).unwrap();
        f.write_all_at(b"data", BLOCK_SIZE).unwrap();
        let hashed = scan(&File::open(&path).unwrap(), true).unwrap();
        let skipped = scan(&File::open(&path).unwrap(), false).unwrap();
        assert_eq!(skipped.sha256, [0; 32]);
        assert_eq!(
            skipped.blocks.iter().map(|b| b.index).collect::<Vec<_>>(),
            hashed.blocks.iter().map(|b| b.index).collect::<Vec<_>>()
        );
        let hex = imagectl_core::digest::hex(&hashed.sha256);
        assert_eq!(digest_of_hex(&hex), Some(hashed.sha256));
        assert_eq!(digest_of_hex("abc"), None);
        assert_eq!(digest_of_hex(&"zz".repeat(32)), None);
    }

    #[test]
    fn an_empty_or_all_hole_image_has_no_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk.raw");
        for len in [0, 3 * BLOCK_SIZE + 5] {
            File::create(&path).unwrap().set_len(len).unwrap();
            let scan = scan(&File::open(&path).unwrap(), true).unwrap();
            assert!(scan.blocks.is_empty());
            assert_eq!(scan.sha256[..], Sha256::digest(vec![0; len as usize])[..]);
        }
    }

    #[test]
    fn the_volume_is_the_image_rounded_up_to_a_gib_or_what_is_asked_if_it_fits() {
        let p = Path::new("disk.raw");
        assert_eq!(volume_size(p, None, 0).unwrap(), 1);
        assert_eq!(volume_size(p, None, GIB).unwrap(), 1);
        assert_eq!(volume_size(p, None, GIB + 1).unwrap(), 2);
        assert_eq!(volume_size(p, Some(8), GIB + 1).unwrap(), 8);
        let small = volume_size(p, Some(1), GIB + 1).unwrap_err();
        assert!(small.is_usage());
        assert_eq!(
            small.to_string(),
            "the disk image `disk.raw` needs a volume of at least 2 GiB, not 1 GiB"
        );
        assert_eq!(
            volume_size(p, Some(70_000), 1).unwrap_err().to_string(),
            "the disk image `disk.raw` needs a volume of 70000 GiB; EBS snapshots hold at most 65536 GiB"
        );
    }

    #[test]
    fn the_client_token_is_the_image_and_every_setting() {
        let tags = BTreeMap::from([("imagectl:role".to_string(), "app".to_string())]);
        let upload = Upload {
            path: Path::new("disk.raw"),
            sha256: None,
            volume_size_gib: None,
            description: "app",
            tags: &tags,
            encrypted: false,
            kms_key_arn: None,
            timeout_minutes: 60,
        };
        let scan = Scan {
            size: 1,
            sha256: [1; 32],
            blocks: Vec::new(),
        };
        let token = client_token(&scan, &upload, 8);
        assert_eq!(token.len(), 64);
        assert_eq!(token, client_token(&scan, &upload, 8));
        assert_ne!(token, client_token(&scan, &upload, 9));
        let other = Scan {
            size: 1,
            sha256: [2; 32],
            blocks: Vec::new(),
        };
        assert_ne!(token, client_token(&other, &upload, 8));
        let encrypted = Upload {
            encrypted: true,
            ..upload.clone()
        };
        assert_ne!(token, client_token(&scan, &encrypted, 8));
        let described = Upload {
            description: "app 2",
            ..upload
        };
        assert_ne!(token, client_token(&scan, &described, 8));
    }
}
