//! One module per subcommand, each with `run(&Config, &Args)`.

pub mod bases;
pub mod hash;
pub mod inputs;
pub mod plan;
pub mod render;
pub mod stage;
pub mod validate;
