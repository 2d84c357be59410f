//! Integration tests: real `geoscim serve` processes on port 0 with temp dirs, real RocksDB,
//! real HTTP (`in_process`: regions run through the library, in this process). One test binary
//! with modules keeps link time down.

mod admin;
mod api;
mod bulk;
mod conflicts;
mod conformance;
mod dashboard_browser;
mod dns;
mod dns_netns;
mod events;
mod harness;
mod history;
mod https;
mod in_process;
mod limits;
mod metrics_docs;
mod migration;
mod oauth;
mod paging;
mod partition;
mod replication;
mod restart;
mod robustness;
