//! One module per subcommand, each with `run(&Config, &Args)`.

pub mod hash;
pub mod inputs;
pub mod plan;
pub mod validate;
