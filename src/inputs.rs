//! The inputs of each build, recorded beside its role's channels
//! (`PREFIX/ROLE/inputs/HASH`), so that a later plan can say what changed
//! since the image a channel holds.

use std::collections::BTreeMap;

use imagectl_core::hash::ContentHash;
use imagectl_core::names::inputs_parameter;
use imagectl_core::project::Project;

use crate::aws::{self, Session};

/// Writes the inputs of a build of `h`.
pub async fn record(
    project: &Project,
    session: &Session,
    h: &ContentHash,
) -> Result<(), aws::Error> {
    let name = inputs_parameter(&project.settings.publish.prefix, &h.role, h.hash.as_str());
    session
        .ssm(&project.settings.aws.region)
        .put_string(&name, &h.record())
        .await
}

/// The recorded inputs of each `(role, hash)` that has them, by parameter
/// name ([`inputs_parameter`]), in as few calls as SSM allows.
pub async fn read(
    project: &Project,
    ssm: &aws::Ssm,
    builds: &[(String, String)],
) -> Result<BTreeMap<String, String>, aws::Error> {
    let names: Vec<String> = builds
        .iter()
        .map(|(role, hash)| inputs_parameter(&project.settings.publish.prefix, role, hash))
        .collect();
    ssm.get_many(&names).await
}
