//! `imagectl verify AMI|ROLE --channel C|TARBALL`: checks images against
//! their signed provenance; prints what verified, and fails (exit 1)
//! naming every image that did not and why.

use serde_json::json;

use imagectl_core::names::is_ami_id;
use imagectl_core::project::Project;
use imagectl_core::role;

use super::{aws_runtime, print_json};
use crate::aws::{ImageInfo, Session};
use crate::cli::{OutputFormat, VerifyArgs};
use crate::provenance::{self, Verified};
use crate::{publish, Config, Error};

/// Runs `imagectl verify`.
pub fn run(config: &Config, args: &VerifyArgs) -> Result<(), Error> {
    let project = config.project()?;
    let path = config.dir.join(&args.image);
    let looks_like_path =
        args.image.contains('/') || args.image.ends_with(".tar") || args.image.ends_with(".raw");
    if path.is_file() || looks_like_path {
        if args.channel.is_some() || args.region.is_some() {
            return Err(Error::Usage(
                "a tarball is verified on its own: leave out --channel and --region".into(),
            ));
        }
        if !path.is_file() {
            return Err(Error::Usage(format!(
                "{} is no file; name a tarball in images/local/, an AMI ID, or a role with --channel",
                path.display()
            )));
        }
        let result = provenance::verify_tarball(&project, &path);
        return report(config, vec![result]);
    }
    let rt = aws_runtime()?;
    let results = rt.block_on(async {
        let session = Session::load(&project.settings.aws.region).await;
        let images = images(&project, &session, args).await?;
        let mut verifier = provenance::Verifier::new(&project, &session).await?;
        let mut results = Vec::new();
        for (region, image) in &images {
            results.push(verifier.image(region, image).await);
        }
        Ok::<_, Error>(results)
    })?;
    report(config, results)
}

/// The images `args` names, by region.
async fn images(
    project: &Project,
    session: &Session,
    args: &VerifyArgs,
) -> Result<Vec<(String, ImageInfo)>, Error> {
    let home = &project.settings.aws.region;
    if is_ami_id(&args.image) {
        if args.channel.is_some() {
            return Err(Error::Usage(format!(
                "`{}` is an AMI ID: --channel goes with a role",
                args.image
            )));
        }
        let region = args.region.clone().unwrap_or_else(|| home.clone());
        let found = session
            .ec2(&region)
            .images_by_id(std::slice::from_ref(&args.image))
            .await?;
        let image = found.into_iter().next().ok_or_else(|| {
            Error::Usage(format!(
                "there is no image `{}` in {region}{}",
                args.image,
                if args.region.is_none() {
                    " (the home region; name another with --region)"
                } else {
                    ""
                }
            ))
        })?;
        return Ok(vec![(region, image)]);
    }
    let Some(channel) = &args.channel else {
        return Err(Error::Usage(format!(
            "`{}` is no AMI ID and no file: name a role with --channel, an AMI ID, or a tarball",
            args.image
        )));
    };
    if args.region.is_some() {
        return Err(Error::Usage(
            "a channel is verified in every region: leave out --region".into(),
        ));
    }
    role::load(project, std::slice::from_ref(&args.image))?;
    let amis = publish::read_channel(project, session, &args.image, channel).await?;
    if amis.is_empty() {
        return Err(Error::Failed(anyhow::anyhow!(
            "channel `{channel}` of `{}` holds no image yet",
            args.image
        )));
    }
    let mut out = Vec::new();
    for (region, ami) in amis {
        let found = session
            .ec2(&region)
            .images_by_id(std::slice::from_ref(&ami))
            .await?;
        match found.into_iter().next() {
            Some(i) => out.push((region, i)),
            None => {
                return Err(Error::Failed(anyhow::anyhow!(
                    "channel `{channel}` of `{}` holds `{ami}` in {region}, which does not exist",
                    args.image
                )))
            }
        }
    }
    Ok(out)
}

/// Prints what verified; fails naming every image that did not.
fn report(config: &Config, results: Vec<Result<Verified, provenance::Error>>) -> Result<(), Error> {
    let mut verified = Vec::new();
    let mut failed = Vec::new();
    for r in results {
        match r {
            Ok(v) => verified.push(v),
            Err(e @ provenance::Error::Unverified { .. }) => failed.push(e),
            Err(e) => return Err(e.into()),
        }
    }
    match config.output {
        OutputFormat::Json => print_json(&json!({
            "verified": verified,
            "failed": failed.iter().map(|e| match e {
                provenance::Error::Unverified { what, reasons } => json!({"image": what, "reasons": reasons}),
                other => json!({"error": other.to_string()}),
            }).collect::<Vec<_>>(),
        })),
        OutputFormat::Text => {
            for v in &verified {
                println!("{v}");
            }
        }
    }
    if failed.is_empty() {
        return Ok(());
    }
    let all: Vec<String> = failed.iter().map(ToString::to_string).collect();
    Err(Error::Failed(anyhow::anyhow!("{}", all.join("\n"))))
}
