//! Command-line surface: one module per subcommand, each with an `Args`
//! (clap) and a `run` returning the process exit code; the flags several
//! commands share ([`args`]), the stop and reopen signals ([`signals`]) and
//! the log messages' form ([`logging`]).

pub mod agent;
pub mod args;
pub mod doctor;
pub mod export;
pub mod live;
pub mod logging;
pub mod record;
pub mod replay;
pub mod signals;
pub mod simulate;
