//! The `geoscim` binary: logging, CLI, run.

use clap::Parser;

/// mimalloc: the request path allocates many small JSON and Automerge objects; measured faster
/// than the system allocator under load (see the benchmark notes in the README).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("GEOSCIM_LOG")
                .unwrap_or_else(|_| "geoscim=info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    geoscim::cli::run(geoscim::cli::Cli::parse()).await
}
