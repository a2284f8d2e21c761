use std::process::ExitCode;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    service_runtime::cli::main(
        "The likes foundation service: likes and reposts of tracks by users",
        likes::SETTINGS,
        likes::run,
    )
}
