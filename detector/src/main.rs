// The binary links all of the library's dependencies and uses only the
// library and the command line's; the lint is meant for the library.
#![allow(unused_crate_dependencies)]

use std::process::ExitCode;

use detector::cli;

fn main() -> ExitCode {
    cli::main()
}
