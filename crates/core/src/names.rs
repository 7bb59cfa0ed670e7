//! imagectl's vocabulary on AWS, defined once: the tags it puts on what it
//! creates, the names of its parameters, and the build IDs that name each
//! build's image, instance and key pair.

use crate::time;

/// Tag keys imagectl puts on images, snapshots and build resources.
pub mod tags {
    /// The prefix of every imagectl tag key.
    pub const PREFIX: &str = "imagectl:";
    /// The role.
    pub const ROLE: &str = "imagectl:role";
    /// The content hash.
    pub const HASH: &str = "imagectl:content-hash";
    /// The build that made it ([`super::build_id`]).
    pub const BUILD: &str = "imagectl:build";
    /// The git commit it was built from.
    pub const COMMIT: &str = "imagectl:commit";
    /// The base image it was built on.
    pub const BASE_AMI: &str = "imagectl:base-ami";
    /// The imagectl version that built it.
    pub const VERSION: &str = "imagectl:version";
    /// SHA-256 of the build's SBOM (`imagectl sbom`).
    pub const SBOM: &str = "imagectl:sbom-sha256";
    /// SHA-256 of the disk image an AMI was registered from (`--method
    /// disk`): the bytes `imagectl test --vm` booted.
    pub const DISK: &str = "imagectl:disk-sha256";
    /// On a launch template: the channel it follows, which the publish
    /// policy of that channel may move.
    pub const CHANNEL: &str = "imagectl:channel";
    /// EC2's display name.
    pub const NAME: &str = "Name";
    /// The tags every complete image carries (besides `Name`).
    pub const COMPLETE: [&str; 3] = [ROLE, HASH, BUILD];

    /// Whether imagectl copies this tag to every region's copy of an image.
    pub fn is_imagectl(key: &str) -> bool {
        key.starts_with(PREFIX) || key == NAME
    }
}

/// Where a role's channel lives: `PREFIX/ROLE/CHANNEL`.
pub fn channel_parameter(prefix: &str, role: &str, channel: &str) -> String {
    format!("{prefix}/{role}/{channel}")
}

/// The parameter holding the inputs of the build of `hash`, beside the
/// role's channels, so a later plan can say what changed.
pub fn inputs_parameter(prefix: &str, role: &str, hash: &str) -> String {
    format!("{prefix}/{role}/inputs/{hash}")
}

/// The parameter holding the SBOM of the AMI build of `hash`, gzipped and
/// base64 ([`crate::sbom::store::pack`]), beside its inputs: readable
/// wherever the channels are, not only on the machine that built it.
pub fn sbom_parameter(prefix: &str, role: &str, hash: &str) -> String {
    format!("{prefix}/{role}/sbom/{hash}")
}

/// The parameter holding the signed provenance of the build of `hash` (a
/// DSSE envelope), beside its inputs.
pub fn provenance_parameter(prefix: &str, role: &str, hash: &str) -> String {
    format!("{prefix}/{role}/provenance/{hash}")
}

/// The prefix of the names of the images builds make (`imagectl-ROLE-BUILD`).
pub const IMAGE_NAME_PREFIX: &str = "imagectl-";

/// The prefix of the names of build instances (`imagectl-build-ROLE-BUILD`).
pub const INSTANCE_NAME_PREFIX: &str = "imagectl-build-";

/// A build's ID, `HASH12-YYYYMMDDhhmmss` (from the first 12 digits of the
/// content hash, [`crate::hash::Hash::short`], and the time): it names the
/// image, the build instance and its key pair, and is the `imagectl:build`
/// tag.
pub fn build_id(hash12: &str, secs: i64) -> String {
    format!("{hash12}-{}", time::stamp(secs))
}

/// The `YYYYMMDDhhmmss` stamp of a build ID ([`build_id`]).
pub fn build_stamp(build: &str) -> Option<&str> {
    build.rsplit_once('-').map(|(_, stamp)| stamp)
}

/// The time a build ID's stamp names, in seconds since the epoch.
pub fn build_secs(build: &str) -> Option<i64> {
    build_stamp(build).and_then(time::stamp_secs)
}

/// The build ID in a name imagectl gives a build's resources:
/// `PREFIX` `ROLE-` `HASH12-YYYYMMDDhhmmss`, with ROLE non-empty. Anything
/// else is not imagectl's.
pub fn build_of_name<'a>(name: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = name.strip_prefix(prefix)?;
    let mut parts = rest.rsplitn(3, '-');
    let stamp = parts.next()?;
    let hash = parts.next()?;
    let role = parts.next()?;
    let hex = hash.len() == 12
        && hash
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    let role_ok = !role.is_empty()
        && role
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    (hex && role_ok && time::stamp_secs(stamp).is_some())
        .then(|| &rest[rest.len() - stamp.len() - hash.len() - 1..])
}

/// An AWS region name (`eu-west-1`, `us-gov-west-1`).
pub fn is_region(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() >= 3
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
        && parts
            .last()
            .is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit()))
}

/// `ami-` followed by 8 or 17 hex digits.
pub fn is_ami_id(s: &str) -> bool {
    s.strip_prefix("ami-").is_some_and(|h| {
        (h.len() == 8 || h.len() == 17)
            && h.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_ids_name_the_hash_and_the_time() {
        let id = build_id("0123456789ab", 1_795_690_494);
        assert_eq!(id, "0123456789ab-20261126105454");
        assert_eq!(build_stamp(&id), Some("20261126105454"));
        assert_eq!(build_secs(&id), Some(1_795_690_494));
        assert_eq!(
            build_of_name(&format!("imagectl-web-app-{id}"), IMAGE_NAME_PREFIX),
            Some(id.as_str())
        );
        assert_eq!(
            build_of_name(
                "imagectl-web-nothex000000-20261126105454",
                IMAGE_NAME_PREFIX
            ),
            None
        );
        assert_eq!(
            build_of_name(&format!("imagectl--{id}"), IMAGE_NAME_PREFIX),
            None
        );
        assert_eq!(
            build_of_name(&format!("other-web-{id}"), IMAGE_NAME_PREFIX),
            None
        );
    }

    #[test]
    fn parameters() {
        assert_eq!(
            channel_parameter("/imagectl", "web", "prod"),
            "/imagectl/web/prod"
        );
        assert_eq!(
            inputs_parameter("/imagectl", "web", "ab"),
            "/imagectl/web/inputs/ab"
        );
        assert!(tags::is_imagectl(tags::HASH) && tags::is_imagectl("Name"));
        assert!(!tags::is_imagectl("team"));
    }

    #[test]
    fn ami_ids() {
        assert!(is_ami_id("ami-0123456789abcdef0"));
        assert!(is_ami_id("ami-12345678"));
        assert!(!is_ami_id("ami-123"));
        assert!(!is_ami_id("ami-0123456789ABCDEF0"));
    }

    #[test]
    fn regions() {
        assert!(is_region("eu-west-1"));
        assert!(is_region("us-gov-west-1"));
        assert!(!is_region("eu-west"));
    }
}
