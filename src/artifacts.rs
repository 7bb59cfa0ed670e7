//! The images imagectl built, found by their tags: the complete images of
//! roles (one `DescribeImages` call however many roles), the image of each
//! role's current hash, and an image's copies in other regions.

use std::collections::BTreeMap;

use imagectl_core::names::tags;
use imagectl_core::target::Target;

use crate::aws::{self, ImageInfo};

/// Every complete (available, tagged) image of these roles in `ec2`'s
/// region, in one `DescribeImages` call (with its pages).
pub async fn role_images(ec2: &aws::Ec2, roles: &[String]) -> Result<Vec<ImageInfo>, aws::Error> {
    if roles.is_empty() {
        return Ok(Vec::new());
    }
    let named: Vec<String> = roles.iter().map(|r| format!("`{r}`")).collect();
    let what = format!("images of role {}", named.join(", "));
    // EC2 takes at most 200 values in one filter: past that, every image
    // with a content hash comes back and is filtered here.
    let mut filters = vec![("tag-key", vec![tags::HASH.to_string()])];
    let role_filter = format!("tag:{}", tags::ROLE);
    if roles.len() <= 200 {
        filters.push((role_filter.as_str(), roles.to_vec()));
    }
    let found = ec2
        .describe_images(&["self".to_string()], &filters)
        .await
        .map_err(|e| e.about(what))?;
    Ok(found
        .into_iter()
        .filter(|i| i.state == "available")
        .filter(|i| {
            i.tag(tags::ROLE)
                .is_some_and(|r| roles.iter().any(|x| x == r))
        })
        .collect())
}

/// The images that exist for `targets`, by role: the newest complete one
/// whose tags carry the role and its current hash.
pub fn existing_of(images: &[ImageInfo], targets: &[Target]) -> BTreeMap<String, ImageInfo> {
    let mut out = BTreeMap::new();
    for t in targets {
        let newest = images
            .iter()
            .filter(|i| {
                i.tag(tags::ROLE) == Some(t.name())
                    && i.tag(tags::HASH) == Some(t.hash.hash.as_str())
            })
            .max_by(|a, b| (&a.created, &a.id).cmp(&(&b.created, &b.id)));
        if let Some(i) = newest {
            out.insert(t.name().to_string(), i.clone());
        }
    }
    out
}

/// The images that exist for `targets` in `ec2`'s region, by role (see
/// [`existing_of`]), in one `DescribeImages` call.
pub async fn find_existing(
    ec2: &aws::Ec2,
    targets: &[Target],
) -> Result<BTreeMap<String, ImageInfo>, aws::Error> {
    let roles: Vec<String> = targets.iter().map(|t| t.name().to_string()).collect();
    let images = role_images(ec2, &roles).await?;
    Ok(existing_of(&images, targets))
}

/// The same image's copies in other regions: per region, the available
/// copy of `home` (see [`newest_copy`]), where there is one. One call per
/// region.
pub async fn copies(
    session: &aws::Session,
    regions: &[&str],
    home: &ImageInfo,
) -> Result<BTreeMap<String, ImageInfo>, aws::Error> {
    let Some(role) = home.tag(tags::ROLE) else {
        return Ok(BTreeMap::new());
    };
    let mut out = BTreeMap::new();
    for region in regions {
        let found = session
            .ec2(region)
            .imagectl_images(&[role.to_string()])
            .await?;
        if let Some(copy) = newest_copy(&found, home, |i| i.state == "available") {
            out.insert(region.to_string(), copy);
        }
    }
    Ok(out)
}

/// The newest copy of `home` among `images` that `keep` accepts: an image
/// with the same role, hash and build tags. The build tag matters: a
/// forced rebuild has the hash of the image before it, and its copies are
/// its own, never the earlier build's.
pub fn newest_copy(
    images: &[ImageInfo],
    home: &ImageInfo,
    keep: impl Fn(&ImageInfo) -> bool,
) -> Option<ImageInfo> {
    images
        .iter()
        .filter(|i| tags::COMPLETE.iter().all(|k| i.tag(k) == home.tag(k)) && keep(i))
        .max_by(|a, b| (&a.created, &a.id).cmp(&(&b.created, &b.id)))
        .cloned()
}
