use std::process::ExitCode;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    service_runtime::cli::main(
        "The tracks foundation service: track metadata, access policies and audio",
        tracks::SETTINGS,
        tracks::run,
    )
}
