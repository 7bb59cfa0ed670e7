//! KMS keys in `[aws] kms_key`: what kind of key a setting names, and so in
//! which regions it can encrypt images.

use crate::names::is_region;

/// What a `kms_key` setting names, and so where it can be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind<'a> {
    /// `alias/NAME`: the alias of that name in each region.
    Alias,
    /// `mrk-...`: a multi-region key, the same ID in every replica region.
    MultiRegionId,
    /// An ARN (`arn:PARTITION:kms:REGION:ACCOUNT:key/...` or `alias/...`):
    /// its region, and whether it names a multi-region key or an alias,
    /// which exist under the same name in other regions.
    Arn { region: &'a str, portable: bool },
    /// A key ID of a single-region key: that region only.
    KeyId,
}

pub fn kind(key: &str) -> Option<Kind<'_>> {
    let is_key_id = |id: &str| {
        id.len() == 36
            && id
                .bytes()
                .all(|b| (b.is_ascii_hexdigit() && !b.is_ascii_uppercase()) || b == b'-')
    };
    let is_mrk = |id: &str| {
        id.strip_prefix("mrk-")
            .is_some_and(|h| h.len() == 32 && h.bytes().all(|b| b.is_ascii_hexdigit()))
    };
    let is_alias = |a: &str| {
        a.strip_prefix("alias/").is_some_and(|n| {
            !n.is_empty()
                && n.len() <= 250
                && n.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"/_-".contains(&b))
        })
    };
    if is_alias(key) {
        return Some(Kind::Alias);
    }
    if is_mrk(key) {
        return Some(Kind::MultiRegionId);
    }
    if is_key_id(key) {
        return Some(Kind::KeyId);
    }
    let parts: Vec<&str> = key.splitn(6, ':').collect();
    match parts[..] {
        ["arn", partition, "kms", region, account, resource]
            if partition.starts_with("aws")
                && is_region(region)
                && account.len() == 12
                && account.bytes().all(|b| b.is_ascii_digit()) =>
        {
            if let Some(id) = resource.strip_prefix("key/") {
                (is_mrk(id) || is_key_id(id)).then_some(Kind::Arn {
                    region,
                    portable: is_mrk(id),
                })
            } else {
                is_alias(resource).then_some(Kind::Arn {
                    region,
                    portable: true,
                })
            }
        }
        _ => None,
    }
}

/// Checks that `key` can encrypt images in the home region and in every
/// copy region: a key exists in one region only, so a single-region key ID
/// or ARN cannot encrypt the copies, and Packer would fail after the whole
/// bake. Err is the message and the advice.
pub fn check(key: &str, home: &str, copies: &[&str]) -> Result<(), (String, String)> {
    let everywhere = "use an alias created in every region (`alias/imagectl-images`), or a multi-region key (`mrk-...`) replicated to them";
    match kind(key) {
        None => Err((
            format!("`{key}` is not a KMS key ID, key ARN or alias"),
            "write `alias/NAME`, a key ID, or `arn:aws:kms:REGION:ACCOUNT:key/ID`".to_string(),
        )),
        Some(Kind::Arn { region, .. }) if region != home => Err((
            format!("`kms_key` is in `{region}`, but images are built in `{home}`"),
            format!("name a key in `{home}`; {everywhere}"),
        )),
        Some(
            Kind::KeyId
            | Kind::Arn {
                portable: false, ..
            },
        ) if !copies.is_empty() => {
            let regions: Vec<String> = copies.iter().map(|r| format!("`{r}`")).collect();
            let plural = if copies.len() == 1 { "" } else { "s" };
            Err((
                format!(
                    "`kms_key` names a single-region key, which does not exist in the copy region{plural} {}",
                    regions.join(", ")
                ),
                everywhere.to_string(),
            ))
        }
        Some(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kms_keys_must_exist_where_images_go() {
        let home = "eu-west-1";
        let copies = ["eu-central-1"];
        let id = "1234abcd-12ab-34cd-56ef-1234567890ab";
        let mrk = "mrk-1234abcd12ab34cd56ef1234567890ab";
        for ok in [
            "alias/imagectl-images".to_string(),
            mrk.to_string(),
            format!("arn:aws:kms:eu-west-1:111122223333:key/{mrk}"),
            "arn:aws:kms:eu-west-1:111122223333:alias/imagectl-images".to_string(),
        ] {
            assert_eq!(check(&ok, home, &copies), Ok(()), "{ok}");
        }
        // A single-region key is fine without copies, not with them.
        let arn = format!("arn:aws:kms:eu-west-1:111122223333:key/{id}");
        for single in [id, arn.as_str()] {
            assert_eq!(check(single, home, &[]), Ok(()));
            let (msg, _) = check(single, home, &copies).unwrap_err();
            assert_eq!(msg, "`kms_key` names a single-region key, which does not exist in the copy region `eu-central-1`");
        }
        let (msg, _) = check(
            &format!("arn:aws:kms:us-east-1:111122223333:key/{mrk}"),
            home,
            &[],
        )
        .unwrap_err();
        assert_eq!(
            msg,
            "`kms_key` is in `us-east-1`, but images are built in `eu-west-1`"
        );
        for bad in [
            "imagectl-images",
            "alias/",
            "arn:aws:kms:eu-west-1:1:key/x",
            "KEY",
        ] {
            let (msg, _) = check(bad, home, &copies).unwrap_err();
            assert!(
                msg.ends_with("is not a KMS key ID, key ARN or alias"),
                "{bad}: {msg}"
            );
        }
    }
}
