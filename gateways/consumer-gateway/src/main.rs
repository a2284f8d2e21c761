use std::process::ExitCode;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    service_runtime::cli::main(
        "The consumer domain gateway: the listener's view of tracks and the listener's commands",
        consumer_gateway::SETTINGS,
        consumer_gateway::run,
    )
}
