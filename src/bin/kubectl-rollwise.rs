//! `kubectl-rollwise`: the kubectl plugin (`kubectl rollwise …` when this
//! binary is on PATH). All logic lives in [`rollwise::cli`].

use std::process::ExitCode;

use clap::Parser;
use rollwise::cli::{Cli, EXIT_USAGE};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version print to stdout and exit 0; usage errors
            // print to stderr and exit 2.
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { EXIT_USAGE } else { 0 });
        }
    };
    ExitCode::from(rollwise::cli::main(cli).await)
}
