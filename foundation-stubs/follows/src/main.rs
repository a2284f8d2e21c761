use std::process::ExitCode;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    service_runtime::cli::main(
        "The follows foundation service: who follows whom",
        follows::SETTINGS,
        follows::run,
    )
}
