//! Resolving `[bases]` against EC2 for `images/bases.lock`: the lookups
//! here, the choice in [`imagectl_core::lock::select`].

use imagectl_core::lock::{self, Candidate, Lock, Query};
use imagectl_core::project::Project;

use crate::aws::{self, ImageInfo, Session};

/// Errors resolving the bases.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A lookup failed.
    #[error(transparent)]
    Aws(#[from] aws::Error),
    /// A base matches no image, or the lock cannot be written.
    #[error(transparent)]
    Lock(#[from] lock::Error),
}

impl Error {
    /// Whether the user fixes it by changing the settings (exit 2).
    pub fn is_usage(&self) -> bool {
        match self {
            Error::Aws(_) => false,
            Error::Lock(e) => e.is_usage(),
        }
    }
}

fn candidate(i: ImageInfo) -> Candidate {
    Candidate {
        id: i.id,
        name: i.name,
        owner: i.owner,
        arch: i.arch,
        created: i.created,
        state: i.state,
    }
}

/// Resolves every base in the home region and every copy region: the newest
/// available image matching each filter. One `DescribeImages` call (with its
/// pages) per region covers every base found by filter, one more the pinned
/// ones.
pub async fn resolve_all(project: &Project, session: &Session) -> Result<Lock, Error> {
    let settings = &project.settings;
    let query = Query::of(settings);
    let mut lock = Lock::default();
    for region in settings.aws.regions() {
        let ec2 = session.ec2(region);
        let mut found = Vec::new();
        if !query.names.is_empty() {
            let filters = [
                ("name", query.names.clone()),
                ("state", vec!["available".to_string()]),
            ];
            found.extend(ec2.describe_images(&query.owners, &filters).await?);
        }
        if !query.pinned.is_empty() {
            // Pinned images are looked up by ID for their name and date.
            found.extend(ec2.images_by_id(&query.pinned).await?);
        }
        let found: Vec<Candidate> = found.into_iter().map(candidate).collect();
        lock::select(settings, region, &found, &mut lock)?;
    }
    Ok(lock)
}
