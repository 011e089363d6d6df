//! The `kafkit` command: the HTTP gateway (`serve`) and operator commands.

mod cli;
mod commands;
mod logging;

use clap::Parser;

/// mimalloc instead of glibc's allocator: the consumer runtime allocates records on the poll
/// thread and frees them on worker threads, a pattern glibc's arenas handle with lock
/// contention (see BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    logging::init(cli.log_format);
    match commands::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
