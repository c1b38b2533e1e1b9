//! The `proxima` binary: everything is in the library (`src/lib.rs`).

use std::process::ExitCode;

fn main() -> ExitCode {
    proxima_cli::run()
}
