//! Integration tests: the compiled `imagectl` binary run in temporary projects.

mod aws;
mod bad_roles;
mod cli;
mod docs;
mod doctor;
mod errors;
mod faults;
mod fuzz_corpus;
mod hash;
mod hostile;
mod iam;
mod identity;
mod layers;
mod local;
mod moto;
mod packer;
mod plan;
mod preview;
mod publish;
mod rollout;
mod sandbox;
mod sbom;
mod support;
mod sweep;
mod validate;
mod workflows;
