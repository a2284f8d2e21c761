use std::process::ExitCode;

fn main() -> ExitCode {
    service_runtime::cli::main(
        "The likes foundation service: likes and reposts of tracks by users",
        likes::SETTINGS,
        likes::run,
    )
}
