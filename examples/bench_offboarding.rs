//! Offboarding everywhere: three regions on loopback (async mode: deactivations still wait for
//! the offboarding quorum), N users created in eu and replicated; then, one after the other,
//! each user is deactivated in eu (Okta's PATCH without a path) and, from the 2xx on, us and
//! ap are polled (GET /Users/{id}, back to back) until both read `active: false`. Prints
//! p50/p99/max of that time.
//!
//! usage: bench_offboarding GEOSCIM_BINARY [N]   (default 1000)

#[path = "common/cluster.rs"]
mod cluster;

use std::time::{Duration, Instant};

use cluster::{pct, Cluster, TOKEN};
use serde_json::{json, Value};

async fn inactive(http: &reqwest::Client, url: &str, id: &str) -> bool {
    let Ok(r) = http
        .get(format!("{url}/scim/v2/Users/{id}"))
        .bearer_auth(TOKEN)
        .send()
        .await
    else {
        return false;
    };
    r.json::<Value>().await.is_ok_and(|v| v["active"] == false)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    anyhow::ensure!(
        args.len() >= 2,
        "usage: bench_offboarding GEOSCIM_BINARY [N]"
    );
    let n: usize = args.get(2).map_or(Ok(1000), |s| s.parse())?;
    anyhow::ensure!((1..=100_000).contains(&n), "N must be 1..=100000");
    let c = Cluster::start(std::path::Path::new(&args[1]), "async")?;
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()?;
    c.wait_connected(&http).await?;
    let (eu, us, ap) = (c.url(0), c.url(1), c.url(2));
    let run: u32 = rand::random();
    // Create N users in eu, 8 at a time.
    let mut ids = Vec::new();
    for chunk in (0..n).collect::<Vec<_>>().chunks(8) {
        let mut tasks = Vec::new();
        for i in chunk {
            let (http, eu) = (http.clone(), eu.clone());
            let body = json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                              "userName": format!("off-{run:08x}-{i}@example.com"), "active": true});
            tasks.push(tokio::spawn(async move {
                let r = http
                    .post(format!("{eu}/scim/v2/Users"))
                    .bearer_auth(TOKEN)
                    .header("content-type", "application/scim+json")
                    .body(body.to_string())
                    .send()
                    .await?;
                anyhow::ensure!(r.status().as_u16() == 201, "POST: {}", r.status());
                let v: Value = r.json().await?;
                Ok(v["id"].as_str().unwrap_or_default().to_string())
            }));
        }
        for t in tasks {
            ids.push(t.await??);
        }
    }
    // Wait until us and ap hold the last one.
    let deadline = Instant::now() + Duration::from_secs(60);
    let last = ids.last().cloned().unwrap_or_default();
    for url in [&us, &ap] {
        while !http
            .get(format!("{url}/scim/v2/Users/{last}"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            anyhow::ensure!(
                Instant::now() < deadline,
                "users not replicated within 60 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let body = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                      "Operations": [{"op": "replace", "value": {"active": false}}]})
    .to_string();
    // Per deactivation: both other regions (the figure), and the first of them.
    let mut lat = Vec::new();
    let mut first = Vec::new();
    let mut ack = Vec::new();
    for id in &ids {
        let sent = Instant::now();
        let r = http
            .patch(format!("{eu}/scim/v2/Users/{id}"))
            .bearer_auth(TOKEN)
            .header("content-type", "application/scim+json")
            .body(body.clone())
            .send()
            .await?;
        anyhow::ensure!(r.status().is_success(), "PATCH: {}", r.status());
        let t0 = Instant::now();
        ack.push((t0 - sent).as_secs_f64() * 1000.0);
        // When each of us and ap first read it inactive (ms after the 2xx).
        let (mut us_at, mut ap_at): (Option<f64>, Option<f64>) = (None, None);
        while us_at.is_none() || ap_at.is_none() {
            let (a, b) = tokio::join!(
                async { us_at.is_some() || inactive(&http, &us, id).await },
                async { ap_at.is_some() || inactive(&http, &ap, id).await }
            );
            let now = t0.elapsed().as_secs_f64() * 1000.0;
            us_at = us_at.or(a.then_some(now));
            ap_at = ap_at.or(b.then_some(now));
            anyhow::ensure!(
                t0.elapsed() < Duration::from_secs(30),
                "{id} still active after 30 s"
            );
        }
        let (u, a) = (us_at.unwrap_or_default(), ap_at.unwrap_or_default());
        first.push(u.min(a));
        lat.push(u.max(a));
    }
    lat.sort_by(f64::total_cmp);
    first.sort_by(f64::total_cmp);
    ack.sort_by(f64::total_cmp);
    println!(
        "| measure ({} deactivations, 3 regions) | p50 ms | p99 ms | max ms |",
        lat.len()
    );
    println!("| --- | ---: | ---: | ---: |");
    println!(
        "| PATCH active=false in eu: request → 2xx (offboarding quorum) | {:.2} | {:.2} | {:.2} |",
        pct(&ack, 0.5),
        pct(&ack, 0.99),
        ack.last().copied().unwrap_or(f64::NAN)
    );
    println!(
        "| 2xx → `active:false` read in us and ap | {:.2} | {:.2} | {:.2} |",
        pct(&lat, 0.5),
        pct(&lat, 0.99),
        lat.last().copied().unwrap_or(f64::NAN)
    );
    println!(
        "| 2xx → `active:false` read in the first of us and ap | {:.2} | {:.2} | {:.2} |",
        pct(&first, 0.5),
        pct(&first, 0.99),
        first.last().copied().unwrap_or(f64::NAN)
    );
    Ok(())
}
