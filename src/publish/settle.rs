//! Settling a channel and its launch templates when publishes race: SSM
//! has no compare-and-swap, so each publisher writes, reads the history,
//! and writes again the newest image written since it looked (see the
//! module documentation of [`super`]).

use std::collections::BTreeMap;

use imagectl_core::names::tags;

use super::{age, Error, ROUNDS};
use crate::aws::{ImageInfo, Session};

/// One region's channel, as one publisher writes it.
pub(super) struct Write<'a> {
    pub session: &'a Session,
    pub region: &'a str,
    /// The channel parameter.
    pub name: &'a str,
    pub role: &'a str,
}

impl Write<'_> {
    /// Writes `image` to the channel `name` in `region`, whose version was
    /// `since` when this publish looked, and returns the image the channel
    /// settles on: the newest among what was written since, so that racing
    /// publishes end on the same one (see the module documentation). An
    /// explicit step back (`allow_older`) stands unless something is written
    /// after it.
    pub async fn write(
        &self,
        image: &ImageInfo,
        since: i64,
        allow_older: bool,
    ) -> Result<ImageInfo, Error> {
        let (region, name, role) = (self.region, self.name, self.role);
        let ssm = self.session.ssm(region);
        let ec2 = self.session.ec2(region);
        let ours = ssm.put_image_id(name, &image.id).await?;
        let mut known: BTreeMap<String, ImageInfo> =
            BTreeMap::from([(image.id.clone(), image.clone())]);
        for _ in 0..ROUNDS {
            let history = ssm.history(name).await?;
            let Some(latest) = history.last() else {
                return Err(Error::ReadBack {
                    parameter: name.to_string(),
                    region: region.to_string(),
                    wrote: image.id.clone(),
                    found: "(no value)".into(),
                });
            };
            if allow_older {
                return match history.iter().find(|h| h.version > ours) {
                    None => Ok(image.clone()),
                    Some(_) => Err(Error::Superseded {
                        parameter: name.to_string(),
                        region: region.to_string(),
                        wrote: image.id.clone(),
                        found: latest.value.clone(),
                    }),
                };
            }
            let mut written: Vec<String> = history
                .iter()
                .filter(|h| h.version > since)
                .map(|h| h.value.clone())
                .collect();
            written.sort();
            written.dedup();
            let unknown: Vec<String> = written
                .iter()
                .filter(|v| !known.contains_key(*v))
                .cloned()
                .collect();
            for i in ec2.images_by_id(&unknown).await? {
                known.insert(i.id.clone(), i);
            }
            // Only this role's available images count: a value anything else
            // wrote is no image to settle on. Ties (one build) go to the ID,
            // so every publisher picks the same.
            let newest = written
                .iter()
                .filter_map(|v| known.get(v))
                .filter(|i| i.tag(tags::ROLE) == Some(role) && i.state == "available")
                .max_by(|a, b| (age(a), &a.id).cmp(&(age(b), &b.id)))
                .unwrap_or(image)
                .clone();
            if latest.value == newest.id {
                return Ok(newest);
            }
            tracing::info!(
                "{name} in {region}: `{}` was written meanwhile, older than `{}`: writing `{}` again",
                latest.value,
                newest.id,
                newest.id
            );
            ssm.put_image_id(name, &newest.id).await?;
        }
        Err(Error::Unsettled {
            what: name.to_string(),
            region: region.to_string(),
            rounds: ROUNDS,
        })
    }

    /// Makes the default version of launch template `lt` in `region` launch
    /// what the channel `name` holds (`want`, as this publish settled it),
    /// adding a version on top of the latest. A publish running at the same
    /// time may move the default after this one: every publisher re-reads the
    /// channel and the template after its change, and a version another
    /// publisher added since `latest` (this publish's first look) for the
    /// channel's image is reused rather than added again. Returns the default
    /// version and its image, or `None` when the template is gone or was
    /// meanwhile made to resolve the channel parameter itself.
    pub async fn follow(
        &self,
        channel: &str,
        lt: &str,
        latest: i64,
        want: &ImageInfo,
    ) -> Result<Option<(i64, String)>, Error> {
        let (region, name, role) = (self.region, self.name, self.role);
        let ec2 = self.session.ec2(region);
        let ssm = self.session.ssm(region);
        let mut want = want.clone();
        for _ in 0..ROUNDS {
            let Some(t) = ec2.launch_template(lt).await? else {
                return Ok(None);
            };
            if t.default_source().follows(name) {
                tracing::info!("{lt} in {region} now resolves {name} itself: no version added");
                return Ok(None);
            }
            if let Some(now) = ssm.get(name).await?.filter(|v| *v != want.id) {
                // Another publish moved the channel after this one settled it.
                match ec2.images_by_id(std::slice::from_ref(&now)).await?.pop() {
                    Some(i) => want = i,
                    None => {
                        return Err(Error::Refused {
                            parameter: name.to_string(),
                            region: region.to_string(),
                            reason: format!("it now holds `{now}`, which does not exist"),
                        })
                    }
                }
            }
            if t.images.get(&t.default_version) == Some(&want.id) {
                return Ok(Some((t.default_version, want.id)));
            }
            let added = t
                .images
                .iter()
                .filter(|(v, image)| **v > latest && **image == want.id)
                .map(|(v, _)| *v)
                .max();
            match added {
                Some(v) => ec2.launch_template_default(lt, v).await?,
                None => {
                    // No spaces: emulators re-encode them and then reject the signature.
                    let description = format!(
                        "imagectl:{role}:{channel}:{}",
                        want.tag(tags::HASH).unwrap_or("").get(..12).unwrap_or("")
                    );
                    ec2.launch_template_publish(lt, t.latest_version, &want.id, &description)
                        .await?;
                }
            }
        }
        Err(Error::Unsettled {
            what: lt.to_string(),
            region: region.to_string(),
            rounds: ROUNDS,
        })
    }
}
