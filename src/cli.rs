//! Command line: `serve` and `token create`. Thin: parse, call the library, print.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::config::Config;
use crate::server;

/// geoscim: an active-active, multi-region SCIM 2.0 service provider.
#[derive(Debug, Parser)]
#[command(version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run one region: SCIM API, /health and /metrics.
    Serve {
        /// The region's config file (see README: every key can be overridden by GEOSCIM_* env).
        #[arg(long)]
        config: PathBuf,
    },
    /// Manage bearer tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Print a new token and the config lines that accept it (only the hash goes in the config).
    Create {
        /// The tenant (IdP connection) the token acts for.
        #[arg(long)]
        tenant: String,
    },
}

/// Run the parsed command.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { config } => serve(config).await,
        Command::Token {
            command: TokenCommand::Create { tenant },
        } => {
            anyhow::ensure!(
                crate::ids::is_valid_name(&tenant),
                "tenant must be 1-63 characters of a-z, 0-9, '-' and '_'"
            );
            let token = server::new_token_text();
            println!("token: {token}");
            println!("# add to the region's config (only the hash is stored):");
            println!("[[tokens]]");
            println!("tenant = \"{tenant}\"");
            println!("sha256 = \"{}\"", crate::api::token_hash(&token));
            Ok(())
        }
    }
}

async fn serve(path: PathBuf) -> anyhow::Result<()> {
    let config = Config::load(&path, std::env::vars())?;
    let listen = config.http.listen;
    let prepared = tokio::task::spawn_blocking(move || server::prepare(config)).await??;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot bind http listener on {listen}"))?;
    let addr = listener.local_addr()?;
    println!("geoscim: http listening on http://{addr}");
    if let Some(token) = &prepared.new_token {
        println!(
            "geoscim: created token for tenant {}: {token}",
            server::DEFAULT_TENANT
        );
        println!("geoscim: (shown once; only its hash is kept in the data dir)");
    }
    server::serve(prepared.state, listener, shutdown_signal()).await?;
    Ok(())
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}
