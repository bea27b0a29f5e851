//! Command-line surface: one module per subcommand, each with an `Args`
//! (clap) and a `run` returning the process exit code.

pub mod analysis;
pub mod doctor;
pub mod export;
pub mod live;
pub mod record;
pub mod replay;
pub mod simulate;
