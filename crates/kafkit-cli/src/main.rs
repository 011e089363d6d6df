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
            eprintln!("error: {}", message(&error));
            std::process::ExitCode::FAILURE
        }
    }
}

/// `error` and its causes in one line, leaving out a cause whose text its effect already shows
/// (kafkit's errors print their librdkafka source, which anyhow's `{:#}` would print again).
fn message(error: &anyhow::Error) -> String {
    let mut text = error.to_string();
    for cause in error.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text = format!("{text}: {cause}");
        }
    }
    text
}
