use std::process::ExitCode;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    service_runtime::cli::main(
        "The counts foundation service: likes, reposts, downloads and followers, read side",
        counts::SETTINGS,
        counts::run,
    )
}
