//! The read-only calls of `imagectl doctor` and the preflight of `build`,
//! `publish` and `promote`: who the credentials are, and whether the
//! resources a build and a publication need exist. Each answers what it
//! found (`None` when AWS says the resource does not exist); the checks
//! themselves are `crate::preflight`'s.

use aws_config::Region;
use aws_sdk_ec2::error::SdkError;
use aws_sdk_ec2::types::Filter;

use super::error::err;
use super::{Ec2, Error, Session, Ssm};

/// Who the credentials resolve to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The account ID.
    pub account: String,
    /// The caller's ARN.
    pub arn: String,
}

/// Why the identity could not be read.
#[derive(Debug)]
pub struct IdentityError {
    /// Whether no answer came (the endpoint is unreachable), rather than a
    /// refusal (no or wrong credentials).
    pub unreachable: bool,
    /// The error.
    pub error: Error,
}

/// A security group found by its `Name` tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// `sg-...`.
    pub id: String,
    /// Its VPC.
    pub vpc: String,
    /// How many ingress rules it has.
    pub ingress_rules: usize,
}

/// A subnet found by its `Name` tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subnet {
    /// `subnet-...`.
    pub id: String,
    /// Its VPC.
    pub vpc: String,
}

/// A KMS key as `DescribeKey` sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    /// The key's ARN.
    pub arn: String,
    /// `Enabled`, `Disabled`, `PendingDeletion`, ...
    pub state: String,
}

impl Session {
    /// The identity the credentials resolve to (STS `GetCallerIdentity`,
    /// which needs no permission).
    pub async fn identity(&self, region: &str) -> Result<Identity, IdentityError> {
        let watch = self.watch("sts", region);
        let conf = aws_sdk_sts::config::Builder::from(self.sdk_config())
            .region(Region::new(region.to_string()))
            .sleep_impl(watch.sleep())
            .interceptor(watch)
            .build();
        let out = aws_sdk_sts::Client::from_conf(conf)
            .get_caller_identity()
            .send()
            .await
            .map_err(|e| {
                // No connection, or no answer: the endpoint, not the
                // credentials.
                let unreachable = match &e {
                    SdkError::TimeoutError(_) => true,
                    SdkError::DispatchFailure(d) => d.is_io() || d.is_timeout(),
                    _ => false,
                };
                IdentityError {
                    unreachable,
                    error: Error::new("GetCallerIdentity", region, None, e),
                }
            })?;
        Ok(Identity {
            account: out.account().unwrap_or_default().to_string(),
            arn: out.arn().unwrap_or_default().to_string(),
        })
    }

    /// The roles of the instance profile `name`, or `None` when it does
    /// not exist (IAM is global: `region` only signs the request).
    pub async fn instance_profile_roles(
        &self,
        region: &str,
        name: &str,
    ) -> Result<Option<Vec<String>>, Error> {
        let watch = self.watch("iam", region);
        let conf = aws_sdk_iam::config::Builder::from(self.sdk_config())
            .region(Region::new(region.to_string()))
            .sleep_impl(watch.sleep())
            .interceptor(watch)
            .build();
        let out = aws_sdk_iam::Client::from_conf(conf)
            .get_instance_profile()
            .instance_profile_name(name)
            .send()
            .await;
        match out {
            Ok(o) => Ok(Some(
                o.instance_profile()
                    .map(|p| {
                        p.roles()
                            .iter()
                            .map(|r| r.role_name().to_string())
                            .collect()
                    })
                    .unwrap_or_default(),
            )),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_no_such_entity_exception()) =>
            {
                Ok(None)
            }
            Err(e) => Err(Error::new("GetInstanceProfile", region, Some(name), e)),
        }
    }

    /// The KMS key `key` (ID, ARN or alias) stands for in `region`, or
    /// `None` when it does not exist there.
    pub async fn kms_key(&self, region: &str, key: &str) -> Result<Option<Key>, Error> {
        let watch = self.watch("kms", region);
        let conf = aws_sdk_kms::config::Builder::from(self.sdk_config())
            .region(Region::new(region.to_string()))
            .sleep_impl(watch.sleep())
            .interceptor(watch)
            .build();
        let out = aws_sdk_kms::Client::from_conf(conf)
            .describe_key()
            .key_id(key)
            .send()
            .await;
        match out {
            Ok(o) => Ok(o.key_metadata().map(|m| Key {
                arn: m.arn().unwrap_or_default().to_string(),
                state: m
                    .key_state()
                    .map(|s| s.as_str().to_string())
                    .unwrap_or_default(),
            })),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_not_found_exception()) =>
            {
                Ok(None)
            }
            Err(e) => Err(Error::new("DescribeKey", region, Some(key), e)),
        }
    }
}

impl Ec2 {
    /// The subnets tagged `Name = name`.
    pub async fn subnets_named(&self, name: &str) -> Result<Vec<Subnet>, Error> {
        let out = self
            .client
            .describe_subnets()
            .filters(name_filter(name))
            .send()
            .await
            .map_err(err("DescribeSubnets", &self.region, Some(name)))?;
        Ok(out
            .subnets()
            .iter()
            .map(|s| Subnet {
                id: s.subnet_id().unwrap_or_default().to_string(),
                vpc: s.vpc_id().unwrap_or_default().to_string(),
            })
            .collect())
    }

    /// The security groups tagged `Name = name`.
    pub async fn security_groups_named(&self, name: &str) -> Result<Vec<Group>, Error> {
        let out = self
            .client
            .describe_security_groups()
            .filters(name_filter(name))
            .send()
            .await
            .map_err(err("DescribeSecurityGroups", &self.region, Some(name)))?;
        Ok(out
            .security_groups()
            .iter()
            .map(|g| Group {
                id: g.group_id().unwrap_or_default().to_string(),
                vpc: g.vpc_id().unwrap_or_default().to_string(),
                ingress_rules: g.ip_permissions().len(),
            })
            .collect())
    }

    /// The account's image block public access state in this region
    /// (`unblocked`, `block-new-sharing`). Asked once, never retried: the
    /// answer is advice, and an emulator that lacks the call answers 500.
    pub async fn image_block_public_access(&self) -> Result<String, Error> {
        let once = aws_sdk_ec2::config::Builder::default()
            .retry_config(aws_config::retry::RetryConfig::disabled());
        let out = self
            .client
            .get_image_block_public_access_state()
            .customize()
            .config_override(once)
            .send()
            .await
            .map_err(err("GetImageBlockPublicAccessState", &self.region, None))?;
        Ok(out
            .image_block_public_access_state()
            .unwrap_or_default()
            .to_string())
    }
}

impl Ssm {
    /// Reads the parameters directly below `path` (one at most): whether
    /// SSM answers, with these credentials, under the prefix.
    pub async fn probe_path(&self, path: &str) -> Result<(), Error> {
        self.client
            .get_parameters_by_path()
            .path(path)
            .max_results(1)
            .send()
            .await
            .map_err(err("GetParametersByPath", &self.region, Some(path)))?;
        Ok(())
    }
}

fn name_filter(name: &str) -> Filter {
    Filter::builder().name("tag:Name").values(name).build()
}
