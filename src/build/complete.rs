//! Completing images in every region: the home image copied where no copy
//! exists yet, and every copy tagged (images and snapshots), IMDSv2 only,
//! shared with the listed accounts and available, before anyone may
//! publish it.

use std::collections::BTreeMap;
use std::time::Duration;

use imagectl_core::names::tags;
use imagectl_core::project::Project;

use crate::artifacts::newest_copy;
use crate::aws::{self, ImageInfo, Session};

/// AMI ID per region, by role.
pub type Amis = BTreeMap<String, BTreeMap<String, String>>;

/// Makes images complete in every region (see the module). `homes` are
/// the home images, by role; `fresh` images (just built) are tagged even
/// where their tags look complete. Returns AMI per region, by role.
pub async fn complete(
    project: &Project,
    session: &Session,
    homes: &[(String, ImageInfo)],
    fresh: bool,
) -> Result<Amis, aws::Error> {
    let settings = &project.settings;
    let wait = Duration::from_secs(settings.build.wait_minutes * 60);
    let mut result = Amis::new();
    for region in settings.aws.regions() {
        let ec2 = session.ec2(region);
        let images = copies_in(project, &ec2, homes).await?;
        let ids: Vec<String> = images.iter().map(|(_, id, _)| id.clone()).collect();
        let available = ec2.wait_available(&ids, wait).await?;
        for (role, id, wanted) in &images {
            let Some(image) = available.iter().find(|i| &i.id == id) else {
                continue;
            };
            finish(&ec2, image, wanted, fresh, &settings.aws.share_accounts).await?;
            result
                .entry(role.clone())
                .or_default()
                .insert(region.to_string(), image.id.clone());
        }
    }
    Ok(result)
}

/// Each role's image in `ec2`'s region, copied there from the home image
/// where no copy exists yet, with the imagectl tags it must carry: (role,
/// AMI ID, tags).
async fn copies_in(
    project: &Project,
    ec2: &aws::Ec2,
    homes: &[(String, ImageInfo)],
) -> Result<Vec<(String, String, BTreeMap<String, String>)>, aws::Error> {
    let home = &project.settings.aws.region;
    let at_home = &ec2.region == home;
    let roles: Vec<String> = homes.iter().map(|(r, _)| r.clone()).collect();
    // Copies are found by their tags: one call for every role.
    let present = if at_home {
        Vec::new()
    } else {
        ec2.imagectl_images(&roles).await?
    };
    let mut out = Vec::new();
    for (role, home_image) in homes {
        let wanted: BTreeMap<String, String> = home_image
            .tags
            .iter()
            .filter(|(k, _)| tags::is_imagectl(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let copy = if at_home {
            Some(home_image.clone())
        } else {
            newest_copy(&present, home_image, |i| i.state != "failed")
        };
        let id = match copy {
            Some(i) => i.id,
            None => {
                tracing::info!("{role}: copying {} to {}", home_image.id, ec2.region);
                let key = project.settings.aws.kms_key_in(&ec2.region);
                ec2.copy_image(home, home_image, key.as_deref(), &wanted)
                    .await?
            }
        };
        out.push((role.clone(), id, wanted));
    }
    Ok(out)
}

/// Tags (copies carry none from CopyImage; snapshots after images),
/// requires IMDSv2 and shares one available image.
async fn finish(
    ec2: &aws::Ec2,
    image: &ImageInfo,
    wanted: &BTreeMap<String, String>,
    fresh: bool,
    accounts: &[String],
) -> Result<(), aws::Error> {
    let missing = wanted.iter().any(|(k, v)| image.tags.get(k) != Some(v));
    if missing || fresh {
        let mut resources = vec![image.id.clone()];
        resources.extend(image.snapshots.iter().cloned());
        ec2.create_tags(&resources, wanted).await?;
    }
    // Once v2.0, always v2.0: only images that say otherwise are set.
    if image.imds_support.as_deref() != Some("v2.0") {
        ec2.require_imdsv2(&image.id).await?;
    }
    ec2.share(image, accounts).await
}
