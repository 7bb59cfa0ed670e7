//! SSM Parameter Store: channel parameters, their history, the recorded
//! inputs of builds.

use std::collections::BTreeMap;

use aws_sdk_ssm::types::ParameterType;

use super::error::err;
use super::Error;

/// SSM Parameter Store in one region.
#[derive(Debug, Clone)]
pub struct Ssm {
    pub(super) client: aws_sdk_ssm::Client,
    /// The region.
    pub region: String,
}

/// One version of a parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamVersion {
    /// Version number, from 1.
    pub version: i64,
    /// The value.
    pub value: String,
}

impl Ssm {
    /// The current value, or `None` when the parameter does not exist.
    pub async fn get(&self, name: &str) -> Result<Option<String>, Error> {
        match self.client.get_parameter().name(name).send().await {
            Ok(out) => Ok(out.parameter().and_then(|p| p.value()).map(String::from)),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_parameter_not_found()) =>
            {
                Ok(None)
            }
            Err(e) => Err(Error::new("GetParameter", &self.region, Some(name), e)),
        }
    }

    /// The current value with its version, or `None` when the parameter
    /// does not exist.
    pub async fn current(&self, name: &str) -> Result<Option<ParamVersion>, Error> {
        match self.client.get_parameter().name(name).send().await {
            Ok(out) => Ok(out.parameter().map(|p| ParamVersion {
                version: p.version(),
                value: p.value().unwrap_or_default().to_string(),
            })),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_parameter_not_found()) =>
            {
                Ok(None)
            }
            Err(e) => Err(Error::new("GetParameter", &self.region, Some(name), e)),
        }
    }

    /// Writes an AMI ID as a channel value: a String with data type
    /// `aws:ec2:image`, so EC2 can resolve it in launch templates.
    pub async fn put_image_id(&self, name: &str, ami: &str) -> Result<i64, Error> {
        let out = self
            .client
            .put_parameter()
            .name(name)
            .value(ami)
            .r#type(ParameterType::String)
            .data_type("aws:ec2:image")
            .overwrite(true)
            .send()
            .await
            .map_err(err("PutParameter", &self.region, Some(name)))?;
        Ok(out.version())
    }

    /// The values of the parameters that exist among `names` (ten per call,
    /// the most GetParameters takes).
    pub async fn get_many(&self, names: &[String]) -> Result<BTreeMap<String, String>, Error> {
        let mut out = BTreeMap::new();
        for chunk in names.chunks(10) {
            let res = self
                .client
                .get_parameters()
                .set_names(Some(chunk.to_vec()))
                .send()
                .await
                .map_err(err(
                    "GetParameters",
                    &self.region,
                    chunk.first().map(String::as_str),
                ))?;
            for p in res.parameters() {
                out.insert(
                    p.name().unwrap_or_default().to_string(),
                    p.value().unwrap_or_default().to_string(),
                );
            }
        }
        Ok(out)
    }

    /// Writes a plain String parameter (Intelligent-Tiering: advanced only
    /// when it outgrows the standard tier's 4 KB).
    pub async fn put_string(&self, name: &str, value: &str) -> Result<(), Error> {
        self.client
            .put_parameter()
            .name(name)
            .value(value)
            .r#type(ParameterType::String)
            .tier(aws_sdk_ssm::types::ParameterTier::IntelligentTiering)
            .overwrite(true)
            .send()
            .await
            .map_err(err("PutParameter", &self.region, Some(name)))?;
        Ok(())
    }

    /// Every version of a parameter, oldest first; empty when it does not exist.
    pub async fn history(&self, name: &str) -> Result<Vec<ParamVersion>, Error> {
        let mut pages = self
            .client
            .get_parameter_history()
            .name(name)
            .into_paginator()
            .send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            match page {
                Ok(page) => out.extend(page.parameters().iter().map(|p| ParamVersion {
                    version: p.version(),
                    value: p.value().unwrap_or_default().to_string(),
                })),
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|s| s.is_parameter_not_found()) =>
                {
                    return Ok(Vec::new())
                }
                Err(e) => {
                    return Err(Error::new(
                        "GetParameterHistory",
                        &self.region,
                        Some(name),
                        e,
                    ))
                }
            }
        }
        out.sort_by_key(|p| p.version);
        Ok(out)
    }

    /// Every parameter below `path`, recursively: name → value.
    pub async fn by_path(&self, path: &str) -> Result<BTreeMap<String, String>, Error> {
        let mut pages = self
            .client
            .get_parameters_by_path()
            .path(path)
            .recursive(true)
            .into_paginator()
            .send();
        let mut out = BTreeMap::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(err("GetParametersByPath", &self.region, Some(path)))?;
            for p in page.parameters() {
                out.insert(
                    p.name().unwrap_or_default().to_string(),
                    p.value().unwrap_or_default().to_string(),
                );
            }
        }
        Ok(out)
    }
}
