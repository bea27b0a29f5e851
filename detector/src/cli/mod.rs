//! Command-line surface: one module per subcommand, each with an `Args`
//! (clap) and a `run` returning the process exit code; the flags several
//! commands share ([`args`]) and the stop signals ([`signals`]).

pub mod args;
pub mod doctor;
pub mod export;
pub mod live;
pub mod logging;
pub mod record;
pub mod replay;
pub mod signals;
pub mod simulate;
