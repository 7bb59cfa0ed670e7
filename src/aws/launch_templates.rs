//! EC2 launch templates: reading their versions' images (an AMI ID, or a
//! Systems Manager parameter resolved at launch), adding a version with a
//! new image, making it the default.

use std::collections::BTreeMap;

use aws_sdk_ec2::types::{
    LaunchTemplateHttpTokensState, LaunchTemplateInstanceMetadataEndpointState,
    LaunchTemplateInstanceMetadataOptionsRequest, RequestLaunchTemplateData,
};

use aws_sdk_ec2::error::ProvideErrorMetadata;

use super::error::err;
use super::{Ec2, Error};

/// A launch template and its versions' images.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchTemplate {
    /// Its ID (`lt-...`).
    pub id: String,
    /// Its name.
    pub name: String,
    /// The default version.
    pub default_version: i64,
    /// The latest version.
    pub latest_version: i64,
    /// The image ID of each version (as written: an AMI ID or `resolve:ssm:...`).
    pub images: BTreeMap<i64, String>,
    /// Its tags.
    pub tags: BTreeMap<String, String>,
}

impl LaunchTemplate {
    /// What the default version launches. The default, not the latest: it
    /// is what a launch that names no version (and an Auto Scaling group on
    /// `$Default`) uses, and the version publishing moves.
    pub fn default_source(&self) -> Source<'_> {
        self.source(self.default_version)
    }

    /// What version `version` launches ([`Source::Nothing`] if there is no
    /// such version).
    pub fn source(&self, version: i64) -> Source<'_> {
        source(self.images.get(&version).map_or("", String::as_str))
    }
}

/// What a launch template version's `ImageId` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source<'a> {
    /// No image at all.
    Nothing,
    /// A fixed AMI ID.
    Ami(&'a str),
    /// A Systems Manager parameter EC2 reads at each launch
    /// (`resolve:ssm:NAME`, `resolve:ssm:NAME:VERSION-OR-LABEL`, or the same
    /// with the parameter's ARN).
    Parameter {
        /// The parameter's name (from an ARN, the part after `parameter`).
        name: &'a str,
        /// The version or label after the name, if any: it pins the launch
        /// to that value of the parameter.
        selector: Option<&'a str>,
        /// The reference as written, after `resolve:ssm:`.
        written: &'a str,
    },
}

impl Source<'_> {
    /// Whether this is the parameter `name` itself, following its current
    /// value (no version or label). Names are compared without a leading
    /// `/`, which an ARN folds into `parameter/`.
    pub fn follows(&self, parameter: &str) -> bool {
        matches!(self, Source::Parameter { name, selector: None, .. }
            if name.trim_start_matches('/') == parameter.trim_start_matches('/'))
    }
}

/// Reads a launch template version's `ImageId`.
pub fn source(image_id: &str) -> Source<'_> {
    let Some(written) = image_id.strip_prefix("resolve:ssm:") else {
        return if image_id.is_empty() {
            Source::Nothing
        } else {
            Source::Ami(image_id)
        };
    };
    // A name cannot hold `:`, so what follows the name's `:` is the version
    // or label. An ARN has five `:` before `parameter/NAME`.
    let (name, selector) = if written.starts_with("arn:") {
        let mut parts = written.splitn(7, ':');
        let name = parts.nth(5).unwrap_or_default();
        (name.strip_prefix("parameter").unwrap_or(name), parts.next())
    } else {
        match written.split_once(':') {
            Some((n, s)) => (n, Some(s)),
            None => (written, None),
        }
    };
    Source::Parameter {
        name,
        selector,
        written,
    }
}

impl Ec2 {
    /// The launch template `name` with its versions, if it exists.
    pub async fn launch_template(&self, name: &str) -> Result<Option<LaunchTemplate>, Error> {
        let out = self
            .client
            .describe_launch_templates()
            .launch_template_names(name)
            .send()
            .await;
        let out = match out {
            Ok(o) => o,
            Err(e) => {
                let code = e
                    .as_service_error()
                    .and_then(|s| ProvideErrorMetadata::code(s).map(String::from));
                if code.as_deref().is_some_and(|c| c.contains("NotFound")) {
                    return Ok(None);
                }
                return Err(Error::new(
                    "DescribeLaunchTemplates",
                    &self.region,
                    Some(name),
                    e,
                ));
            }
        };
        let Some(lt) = out.launch_templates().first() else {
            return Ok(None);
        };
        let mut images = BTreeMap::new();
        let mut pages = self
            .client
            .describe_launch_template_versions()
            .launch_template_name(name)
            .into_paginator()
            .items()
            .send();
        while let Some(v) = pages.next().await {
            let v = v.map_err(err(
                "DescribeLaunchTemplateVersions",
                &self.region,
                Some(name),
            ))?;
            let image = v
                .launch_template_data()
                .and_then(|d| d.image_id())
                .unwrap_or_default()
                .to_string();
            images.insert(v.version_number().unwrap_or_default(), image);
        }
        Ok(Some(LaunchTemplate {
            id: lt.launch_template_id().unwrap_or_default().to_string(),
            name: name.to_string(),
            default_version: lt.default_version_number().unwrap_or_default(),
            latest_version: lt.latest_version_number().unwrap_or_default(),
            images,
            tags: super::tag_map(lt.tags()),
        }))
    }

    /// Adds a version with `image` (and IMDSv2 required) on top of version
    /// `source` (the latest, by number rather than `$Latest`: a version
    /// added meanwhile is then not silently built upon), makes it the
    /// default, and returns its number.
    ///
    /// The request carries a client token derived from the template, the
    /// source version, the image and the description. Without one, EC2
    /// makes up a token per request, so a retry after an answer lost on
    /// the way back (a 500 or a dropped connection after EC2 acted) adds a
    /// second version; with it, EC2 answers the retry, and a run repeated
    /// before anything else changed the template, with the version the
    /// first request made.
    pub async fn launch_template_publish(
        &self,
        name: &str,
        source: i64,
        image: &str,
        description: &str,
    ) -> Result<i64, Error> {
        let metadata = LaunchTemplateInstanceMetadataOptionsRequest::builder()
            .http_tokens(LaunchTemplateHttpTokensState::Required)
            .http_endpoint(LaunchTemplateInstanceMetadataEndpointState::Enabled)
            .http_put_response_hop_limit(1)
            .build();
        let data = RequestLaunchTemplateData::builder()
            .image_id(image)
            .metadata_options(metadata)
            .build();
        let out = self
            .client
            .create_launch_template_version()
            .client_token(launch_template_token(name, source, image, description))
            .launch_template_name(name)
            .source_version(source.to_string())
            .version_description(description)
            .launch_template_data(data)
            .send()
            .await
            .map_err(err("CreateLaunchTemplateVersion", &self.region, Some(name)))?;
        let version = out
            .launch_template_version()
            .and_then(|v| v.version_number())
            .unwrap_or_default();
        self.launch_template_default(name, version).await?;
        Ok(version)
    }

    /// Makes `version` the default version of launch template `name`.
    pub async fn launch_template_default(&self, name: &str, version: i64) -> Result<(), Error> {
        self.client
            .modify_launch_template()
            .launch_template_name(name)
            .default_version(version.to_string())
            .send()
            .await
            .map_err(err("ModifyLaunchTemplate", &self.region, Some(name)))?;
        Ok(())
    }
}

/// The client token of the launch template version that puts `image` on
/// top of version `source` of template `name`, described as `description`:
/// 64 hex digits (EC2 allows up to 128 ASCII characters), the same for the
/// same request and only for it (EC2 refuses a token reused with other
/// parameters).
fn launch_template_token(name: &str, source: i64, image: &str, description: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!(
        "imagectl launch template\0{name}\0{source}\0{image}\0{description}"
    ));
    imagectl_core::digest::hex(&digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_image_id_is_an_ami_or_a_parameter_resolved_at_launch() {
        assert_eq!(source(""), Source::Nothing);
        assert_eq!(
            source("ami-0123456789abcdef0"),
            Source::Ami("ami-0123456789abcdef0")
        );
        let channel = "/imagectl/app/prod";
        for (written, name, selector, follows) in [
            ("/imagectl/app/prod", "/imagectl/app/prod", None, true),
            (
                "/imagectl/app/prod:3",
                "/imagectl/app/prod",
                Some("3"),
                false,
            ),
            (
                "/imagectl/app/prod:stable",
                "/imagectl/app/prod",
                Some("stable"),
                false,
            ),
            ("/imagectl/app/dev", "/imagectl/app/dev", None, false),
            (
                "arn:aws:ssm:eu-west-1:111122223333:parameter/imagectl/app/prod",
                "/imagectl/app/prod",
                None,
                true,
            ),
            (
                "arn:aws:ssm:eu-west-1:111122223333:parameter/imagectl/app/prod:2",
                "/imagectl/app/prod",
                Some("2"),
                false,
            ),
        ] {
            let id = format!("resolve:ssm:{written}");
            let s = source(&id);
            assert_eq!(
                s,
                Source::Parameter {
                    name,
                    selector,
                    written
                },
                "{written}"
            );
            assert_eq!(s.follows(channel), follows, "{written}");
        }
        assert!(!source("ami-0123456789abcdef0").follows(channel));
    }

    #[test]
    fn a_launch_template_token_is_the_same_for_the_same_request_only() {
        let token = |name, source, image, description| {
            launch_template_token(name, source, image, description)
        };
        let first = token(
            "app-prod",
            3,
            "ami-0123456789abcdef0",
            "imagectl:app:prod:0123",
        );
        assert_eq!(first.len(), 64);
        assert!(first.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(
            first,
            token(
                "app-prod",
                3,
                "ami-0123456789abcdef0",
                "imagectl:app:prod:0123"
            )
        );
        // The same image on a template that has changed since, another
        // template, image or description: each a new request.
        for other in [
            token(
                "app-prod",
                4,
                "ami-0123456789abcdef0",
                "imagectl:app:prod:0123",
            ),
            token(
                "app-dev",
                3,
                "ami-0123456789abcdef0",
                "imagectl:app:prod:0123",
            ),
            token(
                "app-prod",
                3,
                "ami-0123456789abcdef1",
                "imagectl:app:prod:0123",
            ),
            token(
                "app-prod",
                3,
                "ami-0123456789abcdef0",
                "imagectl:app:dev:0123",
            ),
        ] {
            assert_ne!(first, other);
        }
    }
}
