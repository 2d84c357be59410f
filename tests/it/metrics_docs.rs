//! The metric names people read elsewhere must be the ones `/metrics` exports: the README's
//! metrics table and every query of the Grafana dashboard (`docs/grafana/geoscim-dashboard.json`),
//! against two real replicating regions.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_json::Value;

use crate::harness::{eventually, Cluster};

/// Every `# TYPE name kind` of an exposition.
fn families(exposition: &str) -> BTreeMap<String, String> {
    exposition
        .lines()
        .filter_map(|l| {
            let mut it = l.strip_prefix("# TYPE ")?.split_whitespace();
            Some((it.next()?.to_string(), it.next()?.to_string()))
        })
        .collect()
}

/// Every `geoscim_…` name in a text.
fn names_in(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("geoscim_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        out.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    out
}

/// The family a sample or query name belongs to (`_total`, `_bucket`, … stripped), if exported.
fn family_of<'a>(name: &str, families: &'a BTreeMap<String, String>) -> Option<&'a str> {
    if let Some((k, _)) = families.get_key_value(name) {
        return Some(k);
    }
    for suffix in ["_total", "_bucket", "_sum", "_count", "_created"] {
        if let Some(base) = name.strip_suffix(suffix) {
            if let Some((k, _)) = families.get_key_value(base) {
                return Some(k);
            }
        }
    }
    None
}

fn expressions(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                match (k.as_str(), x) {
                    ("expr" | "query", Value::String(s)) => out.push(s.clone()),
                    _ => expressions(x, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| expressions(x, out)),
        _ => {}
    }
}

#[tokio::test]
async fn the_readme_table_and_the_grafana_dashboard_name_exported_metrics() {
    let cluster = Cluster::new(&["ma", "mb"]);
    let regions = cluster.start_all();
    let exposition = eventually(60, "per-peer replication series", || async {
        let text = regions[0]
            .client
            .get(format!("{}/metrics", regions[0].url))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        text.contains("geoscim_replication_peer_connected{peer=\"mb\"}")
            .then_some(text)
    })
    .await;
    let families = families(&exposition);
    assert!(families.len() > 20, "{exposition}");

    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("docs/grafana/geoscim-dashboard.json")).unwrap(),
    )
    .expect("the Grafana dashboard parses as JSON");
    assert!(dashboard["panels"]
        .as_array()
        .is_some_and(|p| !p.is_empty()));
    let mut exprs = Vec::new();
    expressions(&dashboard, &mut exprs);
    assert!(exprs.len() >= 10, "{exprs:?}");
    for expr in &exprs {
        for name in names_in(expr) {
            assert!(
                family_of(&name, &families).is_some(),
                "the Grafana query {expr:?} reads {name}, which /metrics does not export"
            );
        }
    }

    // The README's table: every row is exported (DNS rows need a responder, which these
    // regions do not run), and every exported family has a row.
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let documented: BTreeSet<String> = readme
        .lines()
        .filter_map(|l| l.strip_prefix("| `geoscim_"))
        .filter_map(|l| l.split('`').next())
        .map(|n| format!("geoscim_{n}"))
        .collect();
    assert!(documented.len() > 30, "{documented:?}");
    for name in &documented {
        // Event series exist once a tenant has a feed, which these regions lack; the events
        // tests check every documented one against a region that has.
        if name.starts_with("geoscim_dns_") || name.starts_with("geoscim_events_") {
            continue;
        }
        assert!(
            family_of(name, &families).is_some(),
            "the README documents {name}, which /metrics does not export"
        );
    }
    let documented_families: BTreeSet<&str> = documented
        .iter()
        .filter_map(|n| family_of(n, &families))
        .collect();
    for (family, kind) in &families {
        assert!(
            documented_families.contains(family.as_str()),
            "/metrics exports {family} ({kind}), which the README's table does not document"
        );
    }
}
