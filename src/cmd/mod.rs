//! One module per subcommand, each with `run(&Config, &Args)`.

pub mod bases;
pub mod build;
pub mod hash;
pub mod images;
pub mod inputs;
pub mod plan;
pub mod publish;
pub mod render;
pub mod stage;
pub mod sweep;
pub mod test;
pub mod validate;
