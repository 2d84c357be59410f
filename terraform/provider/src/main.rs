//! `terraform-provider-geoscim`: the Terraform provider for geoscim clusters, a plugin process
//! Terraform starts (protocol 6, through the `tf-provider` crate).
//!
//! # Layout
//! - `provider`: the provider and the resources and data sources it serves.
//! - `region`: `geoscim_region`, one region as a detached `geoscim serve` process;
//!   `region_state` its attributes and defaults, `lifecycle` its files and process as read.
//! - `regionconf`: pure: a region's settings checked and rendered as its region file.
//! - `process`: starting detached processes, liveness (zombies are dead), stopping.
//! - `certs`, `token`, `fault`: `geoscim_cluster_certs`, `geoscim_token`, `geoscim_fault`
//!   (kill and stop; `netfault` its partition and degrade).
//! - `network`: `geoscim_network`, namespaces, a router and links for the regions;
//!   `netplan` (pure) their layout and every `ip`/`tc` command line, `netcmd` runs them and
//!   says what this machine cannot do.
//! - `cluster`, `user`: data sources `geoscim_cluster` and `geoscim_user`.
//! - `probe`: `/health`, the admin API and DNS answers read from outside, and their summaries.
//! - `schema`: terse schema and diagnostic helpers.
//!
//! The provider keeps no state of its own (Terraform starts and stops it several times per
//! command) and uses nothing of the geoscim library: it runs the `geoscim` binary and talks to
//! regions over HTTP and DNS, so it never links the store.

mod certs;
mod cluster;
mod fault;
mod lifecycle;
mod netcmd;
mod netfault;
mod netplan;
mod network;
mod probe;
mod process;
mod provider;
mod region;
mod region_state;
mod regionconf;
mod schema;
mod token;
mod user;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // tf-provider appends a captured backtrace to every diagnostic when backtraces are on
    // (RUST_BACKTRACE=1), which buries the message; library backtraces off, panics unchanged.
    std::env::set_var("RUST_LIB_BACKTRACE", "0");
    tf_provider::serve("geoscim", provider::GeoscimProvider).await
}
