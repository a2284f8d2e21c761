//! The `gatewayctl` binary: parses the command line, runs the command, prints its output, and
//! exits non-zero with the error on standard error.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = gatewayctl::Cli::parse();
    match gatewayctl::run(cli).await {
        Ok(output) => {
            print!("{output}");
            std::process::ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("gatewayctl: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
