use std::process::ExitCode;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    service_runtime::cli::main(
        "The creator domain gateway: the owner's view of their tracks, upload, update and delete",
        creator_gateway::SETTINGS,
        creator_gateway::run,
    )
}
