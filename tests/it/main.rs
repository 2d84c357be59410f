//! Integration tests: real `geoscim serve` processes on port 0 with temp dirs, real RocksDB,
//! real HTTP. One test binary with modules keeps link time down.

mod admin;
mod api;
mod bulk;
mod conflicts;
mod conformance;
mod dashboard_browser;
mod dns;
mod dns_netns;
mod harness;
mod history;
mod https;
mod limits;
mod metrics_docs;
mod migration;
mod oauth;
mod paging;
mod partition;
mod replication;
mod restart;
mod robustness;
