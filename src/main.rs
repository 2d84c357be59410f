//! The `geoscim` binary: logging, CLI, run.

use clap::Parser;

/// mimalloc: the request path allocates many small JSON and Automerge objects; measured faster
/// than the system allocator under load (see the benchmark notes in the README).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_env("GEOSCIM_LOG")
        .unwrap_or_else(|_| "geoscim=info".into());
    // GEOSCIM_LOG_FORMAT=json: one JSON object a line (for log shippers); anything else, text.
    let json = std::env::var("GEOSCIM_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        logs.json().with_current_span(false).init();
    } else {
        logs.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
    }
    geoscim::cli::run(geoscim::cli::Cli::parse()).await
}
