use std::process::ExitCode;

fn main() -> ExitCode {
    service_runtime::cli::main(
        "The follows foundation service: who follows whom",
        follows::SETTINGS,
        follows::run,
    )
}
