//! The instance profile of a role's instances: what `imagectl-agent` calls
//! at boot, and nothing else.
//!
//! - its configuration: `ssm:GetParametersByPath` (recursive, decrypted)
//!   on exactly the role's `[boot] parameters` path for the environment
//!   (every environment's when none is named);
//! - `kms:Decrypt` only as SSM asks for it (`kms:ViaService`), only for a
//!   parameter below that path (`kms:EncryptionContext:PARAMETER_ARN`, the
//!   context SSM encrypts every SecureString with);
//! - its Auto Scaling group: `DescribeAutoScalingInstances` (which has no
//!   resource-level permissions) to find it, and `SetInstanceHealth` and
//!   `CompleteLifecycleAction` only on groups tagged with the role.
//!
//! No channel parameter: an instance never reads one. A launch template
//! that resolves a channel at launch (`resolve:ssm:`) is resolved by EC2
//! with the permissions of whoever launches, Auto Scaling's service-linked
//! role for a group, not the instance's.

use serde_json::{json, Value};

use imagectl_core::names::tags;
use imagectl_core::role::Role;
use imagectl_image::template::{self, Multiline};

use super::{allow, allow_if};

/// Why the policy cannot be written.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `iam-policy instance` without a role.
    #[error(
        "`iam-policy instance` needs the role: `imagectl iam-policy instance ROLE [--env ENV]`"
    )]
    NoRole,
    /// The role's parameter path did not render.
    #[error("role `{role}`: `[boot] parameters` does not render for the policy: {reason}")]
    Path {
        /// The role.
        role: String,
        /// Why.
        reason: String,
    },
}

impl Error {
    /// Always the role's to fix.
    pub fn is_usage(&self) -> bool {
        true
    }
}

/// The parameter path of `role` in `env` (`*`: every environment), with
/// everything only an instance knows (its ID, region, zone, the image
/// hash) left as IAM wildcards.
pub fn parameter_path(role: &Role, env: Option<&str>) -> Result<Option<String>, Error> {
    let Some(path) = &role.boot.parameters else {
        return Ok(None);
    };
    let context = json!({
        "env": env.unwrap_or("*"),
        "role": role.name,
        "instance": {"id": "*", "region": "*", "az": "*"},
        "image": {"hash": "*"},
    });
    let mut hb = template::registry();
    template::render(
        &mut hb,
        "[boot] parameters",
        path,
        &context,
        &Multiline::Off,
    )
    .map(|p| Some(p.trim_end_matches('/').to_string()))
    .map_err(|e| Error::Path {
        role: role.name.clone(),
        reason: e.to_string(),
    })
}

/// The statements of the instance profile of `role` in `env`; `regions`
/// are where SSM may decrypt for it.
pub fn statements(role: &Role, env: Option<&str>, regions: &[&str]) -> Result<Vec<Value>, Error> {
    let mut out = Vec::new();
    if let Some(path) = parameter_path(role, env)? {
        let path = path.trim_start_matches('/');
        let below = format!("arn:aws:ssm:*:*:parameter/{path}/*");
        out.push(allow(
            "ReadOwnConfiguration",
            &["ssm:GetParametersByPath"],
            json!([format!("arn:aws:ssm:*:*:parameter/{path}"), below]),
        ));
        let via: Vec<String> = regions
            .iter()
            .map(|r| format!("ssm.{r}.amazonaws.com"))
            .collect();
        out.push(allow_if(
            "DecryptOwnConfigurationThroughSsm",
            &["kms:Decrypt"],
            "arn:aws:kms:*:*:key/*",
            json!({
                "StringEquals": {"kms:ViaService": via},
                "StringLike": {"kms:EncryptionContext:PARAMETER_ARN": below},
            }),
        ));
    }
    out.push(allow(
        "FindOwnGroup",
        &["autoscaling:DescribeAutoScalingInstances"],
        "*",
    ));
    out.push(allow_if(
        "ReportToOwnGroup",
        &[
            "autoscaling:CompleteLifecycleAction",
            "autoscaling:SetInstanceHealth",
        ],
        "arn:aws:autoscaling:*:*:autoScalingGroup:*:autoScalingGroupName/*",
        json!({"StringEquals": {format!("autoscaling:ResourceTag/{}", tags::ROLE): role.name}}),
    ));
    Ok(out)
}
