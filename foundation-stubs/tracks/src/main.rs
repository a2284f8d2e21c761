use std::process::ExitCode;

fn main() -> ExitCode {
    service_runtime::cli::main(
        "The tracks foundation service: track metadata, access policies and audio",
        tracks::SETTINGS,
        tracks::run,
    )
}
