//! EC2 instances, volumes, snapshots, key pairs and security groups: what
//! builds create besides images, as `imagectl sweep` needs to see them.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use aws_sdk_ec2::types::{Filter, Tag};

use super::error::err;
use super::{tag_map, Ec2, Error};

/// An instance, volume, snapshot, key pair or security group: what
/// `imagectl sweep` needs to know to decide whether it is an orphan.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Resource {
    /// `i-...`, `vol-...`, `snap-...`, the key pair's name, `sg-...`.
    pub id: String,
    /// The `Name` tag, or the group's or key pair's own name.
    pub name: String,
    /// `running`, `stopped`, `available`, `completed`, ... (empty when EC2
    /// has no state for the kind).
    pub state: String,
    /// Creation (or launch) time, seconds since the Unix epoch, when EC2
    /// reports one.
    pub created: Option<i64>,
    /// Its tags.
    pub tags: BTreeMap<String, String>,
    /// For an instance: the image, key pair and security groups it uses.
    pub uses: Vec<String>,
}

impl Resource {
    /// A resource known by its `Name` tag, using nothing.
    fn tagged(id: Option<&str>, state: String, created: Option<i64>, tags: &[Tag]) -> Resource {
        let tags = tag_map(tags);
        Resource {
            id: id.unwrap_or_default().to_string(),
            name: tags.get("Name").cloned().unwrap_or_default(),
            state,
            created,
            tags,
            uses: Vec::new(),
        }
    }

    /// The value of a tag.
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags.get(key).map(String::as_str)
    }
}

fn secs(t: Option<&aws_sdk_ec2::primitives::DateTime>) -> Option<i64> {
    t.map(aws_sdk_ec2::primitives::DateTime::secs)
}

impl Ec2 {
    /// Requires IMDSv2 tokens on a running instance.
    pub async fn require_imdsv2_on_instance(&self, instance: &str) -> Result<(), Error> {
        self.client
            .modify_instance_metadata_options()
            .instance_id(instance)
            .http_tokens(aws_sdk_ec2::types::HttpTokensState::Required)
            .http_endpoint(aws_sdk_ec2::types::InstanceMetadataEndpointState::Enabled)
            .send()
            .await
            .map_err(err(
                "ModifyInstanceMetadataOptions",
                &self.region,
                Some(instance),
            ))?;
        Ok(())
    }

    /// Instances carrying a tag, as (instance ID, state).
    pub async fn instances_tagged(
        &self,
        key: &str,
        value: &str,
    ) -> Result<Vec<(String, String)>, Error> {
        let mut pages = self
            .client
            .describe_instances()
            .filters(
                Filter::builder()
                    .name(format!("tag:{key}"))
                    .values(value)
                    .build(),
            )
            .into_paginator()
            .items()
            .send();
        let mut out = Vec::new();
        while let Some(r) = pages.next().await {
            let reservation = r.map_err(err("DescribeInstances", &self.region, None))?;
            for i in reservation.instances() {
                let state = i
                    .state()
                    .and_then(|s| s.name())
                    .map(|n| n.as_str().to_string())
                    .unwrap_or_default();
                out.push((i.instance_id().unwrap_or_default().to_string(), state));
            }
        }
        Ok(out)
    }

    /// Every instance that is pending, running, stopping or stopped, with
    /// what it uses.
    pub async fn live_instances(&self) -> Result<Vec<Resource>, Error> {
        let states = ["pending", "running", "stopping", "stopped"]
            .map(String::from)
            .to_vec();
        let mut pages = self
            .client
            .describe_instances()
            .filters(
                Filter::builder()
                    .name("instance-state-name")
                    .set_values(Some(states))
                    .build(),
            )
            .into_paginator()
            .items()
            .send();
        let mut out = Vec::new();
        while let Some(r) = pages.next().await {
            let reservation = r.map_err(err("DescribeInstances", &self.region, None))?;
            for i in reservation.instances() {
                let state = i.state().and_then(|s| s.name()).map(|n| n.as_str());
                let mut r = Resource::tagged(
                    i.instance_id(),
                    state.unwrap_or_default().to_string(),
                    secs(i.launch_time()),
                    i.tags(),
                );
                r.uses.extend(i.image_id().map(String::from));
                r.uses.extend(i.key_name().map(String::from));
                r.uses.extend(
                    i.security_groups()
                        .iter()
                        .filter_map(|g| g.group_id().map(String::from)),
                );
                out.push(r);
            }
        }
        Ok(out)
    }

    /// Terminates an instance.
    pub async fn terminate_instance(&self, id: &str) -> Result<(), Error> {
        self.client
            .terminate_instances()
            .instance_ids(id)
            .send()
            .await
            .map_err(err("TerminateInstances", &self.region, Some(id)))?;
        Ok(())
    }

    /// Waits until every instance of `ids` is terminated, polling, for at
    /// most `timeout`.
    pub async fn wait_terminated(&self, ids: &[String], timeout: Duration) -> Result<(), Error> {
        if ids.is_empty() {
            return Ok(());
        }
        let start = Instant::now();
        let mut delay = Duration::from_secs(1);
        loop {
            let mut pages = self
                .client
                .describe_instances()
                .filters(
                    Filter::builder()
                        .name("instance-id")
                        .set_values(Some(ids.to_vec()))
                        .build(),
                )
                .into_paginator()
                .items()
                .send();
            let mut left = Vec::new();
            while let Some(r) = pages.next().await {
                let reservation = r.map_err(err("DescribeInstances", &self.region, None))?;
                for i in reservation.instances() {
                    if i.state().and_then(|s| s.name()).map(|n| n.as_str()) != Some("terminated") {
                        left.push(i.instance_id().unwrap_or_default().to_string());
                    }
                }
            }
            if left.is_empty() {
                return Ok(());
            }
            if start.elapsed() >= timeout {
                return Err(Error::other(
                    "DescribeInstances",
                    &self.region,
                    Some(&left.join(", ")),
                    format!("not terminated after {} s", timeout.as_secs()),
                ));
            }
            tokio::time::sleep(delay.min(timeout.saturating_sub(start.elapsed()))).await;
            delay = (delay * 2).min(Duration::from_secs(15));
        }
    }

    /// The snapshots this account owns that carry the tag `key`.
    pub async fn snapshots_tagged(&self, key: &str) -> Result<Vec<Resource>, Error> {
        let mut pages = self
            .client
            .describe_snapshots()
            .owner_ids("self")
            .filters(Filter::builder().name("tag-key").values(key).build())
            .into_paginator()
            .items()
            .send();
        let mut out = Vec::new();
        while let Some(s) = pages.next().await {
            let s = s.map_err(err("DescribeSnapshots", &self.region, None))?;
            let state = s.state().map(|v| v.as_str()).unwrap_or_default();
            out.push(Resource::tagged(
                s.snapshot_id(),
                state.to_string(),
                secs(s.start_time()),
                s.tags(),
            ));
        }
        Ok(out)
    }

    /// The volumes attached to nothing that carry the tag `key`.
    pub async fn detached_volumes_tagged(&self, key: &str) -> Result<Vec<Resource>, Error> {
        let mut pages = self
            .client
            .describe_volumes()
            .filters(Filter::builder().name("tag-key").values(key).build())
            .filters(Filter::builder().name("status").values("available").build())
            .into_paginator()
            .items()
            .send();
        let mut out = Vec::new();
        while let Some(v) = pages.next().await {
            let v = v.map_err(err("DescribeVolumes", &self.region, None))?;
            let state = v.state().map(|s| s.as_str()).unwrap_or_default();
            out.push(Resource::tagged(
                v.volume_id(),
                state.to_string(),
                secs(v.create_time()),
                v.tags(),
            ));
        }
        Ok(out)
    }

    /// Deletes a volume.
    pub async fn delete_volume(&self, id: &str) -> Result<(), Error> {
        self.client
            .delete_volume()
            .volume_id(id)
            .send()
            .await
            .map_err(err("DeleteVolume", &self.region, Some(id)))?;
        Ok(())
    }

    /// The key pairs whose names match `pattern` (`*` wildcards); the
    /// resource's ID is the key pair's name, which is what deleting takes.
    pub async fn key_pairs_named(&self, pattern: &str) -> Result<Vec<Resource>, Error> {
        let out = self
            .client
            .describe_key_pairs()
            .filters(Filter::builder().name("key-name").values(pattern).build())
            .send()
            .await
            .map_err(err("DescribeKeyPairs", &self.region, Some(pattern)))?;
        Ok(out
            .key_pairs()
            .iter()
            .map(|k| Resource {
                id: k.key_name().unwrap_or_default().to_string(),
                name: k.key_name().unwrap_or_default().to_string(),
                state: String::new(),
                created: secs(k.create_time()),
                tags: tag_map(k.tags()),
                uses: Vec::new(),
            })
            .collect())
    }

    /// Deletes a key pair by name.
    pub async fn delete_key_pair(&self, name: &str) -> Result<(), Error> {
        self.client
            .delete_key_pair()
            .key_name(name)
            .send()
            .await
            .map_err(err("DeleteKeyPair", &self.region, Some(name)))?;
        Ok(())
    }

    /// The security groups that carry the tag `key`; the resource's name is
    /// the group's name.
    pub async fn security_groups_tagged(&self, key: &str) -> Result<Vec<Resource>, Error> {
        let mut pages = self
            .client
            .describe_security_groups()
            .filters(Filter::builder().name("tag-key").values(key).build())
            .into_paginator()
            .items()
            .send();
        let mut out = Vec::new();
        while let Some(g) = pages.next().await {
            let g = g.map_err(err("DescribeSecurityGroups", &self.region, None))?;
            out.push(Resource {
                id: g.group_id().unwrap_or_default().to_string(),
                name: g.group_name().unwrap_or_default().to_string(),
                state: String::new(),
                created: None,
                tags: tag_map(g.tags()),
                uses: Vec::new(),
            });
        }
        Ok(out)
    }

    /// Deletes a security group.
    pub async fn delete_security_group(&self, id: &str) -> Result<(), Error> {
        self.client
            .delete_security_group()
            .group_id(id)
            .send()
            .await
            .map_err(err("DeleteSecurityGroup", &self.region, Some(id)))?;
        Ok(())
    }
}
