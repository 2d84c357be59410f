//! Failover RTO at the default settings: three regions on loopback in `sync` mode, idp-sim
//! provisioning through DNS, and KILLS rounds of: wait until idp-sim writes through eu, kill -9
//! eu, time until a live responder (us's) answers without eu (polled every 5 ms), wait until
//! idp-sim has succeeded in us, restart eu, wait until it is answered again. Then idp-sim's gaps without a successful request (its
//! report lists every gap over 200 ms) give kill → first successful request elsewhere.
//!
//! usage: bench_failover GEOSCIM_BINARY [KILLS]   (defaults: 20 kills)

#[path = "common/cluster.rs"]
mod cluster;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cluster::{pct, Cluster, TOKEN};
use hickory_proto::rr::{Name, RecordType};

async fn answer(c: &Cluster, server: usize) -> Option<Vec<String>> {
    let m = geoscim::dns::client::query(
        c.dns(server),
        &Name::from_ascii("scim.geoscim.test.").ok()?,
        RecordType::A,
        None,
        Duration::from_millis(300),
    )
    .await
    .ok()?;
    Some(
        geoscim::dns::client::addresses(&m)
            .0
            .iter()
            .map(|a| a.to_string())
            .collect(),
    )
}

/// POSTs answered 201 by a region, from its /metrics.
async fn posts(http: &reqwest::Client, url: &str) -> u64 {
    let Ok(r) = http.get(format!("{url}/metrics")).send().await else {
        return 0;
    };
    let text = r.text().await.unwrap_or_default();
    text.lines()
        .filter(|l| {
            l.starts_with("geoscim_http_requests_total")
                && l.contains("method=\"POST\"")
                && l.contains("status=\"201\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    anyhow::ensure!(
        args.len() >= 2,
        "usage: bench_failover GEOSCIM_BINARY [KILLS]"
    );
    let bin = std::path::PathBuf::from(&args[1]);
    let kills: usize = args.get(2).map_or(Ok(20), |s| s.parse())?;
    anyhow::ensure!((1..=200).contains(&kills), "KILLS must be 1..=200");
    let mut c = Cluster::start(&bin, "sync")?;
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(2))
        .build()?;
    c.wait_connected(&http).await?;
    let eu = c.ip(0);
    let servers: Vec<String> = (0..3).map(|i| c.dns(i).to_string()).collect();
    let urls: Vec<String> = (0..3).map(|i| c.url(i)).collect();
    // Bounded: it stops starting new users after this many seconds.
    let duration = 20 + kills as u64 * 10;
    let sim = Command::new(&bin)
        .args([
            "idp-sim",
            "--name",
            "scim.geoscim.test",
            "--dns",
            &servers.join(","),
            "--port",
        ])
        .arg(c.http_port.to_string())
        .args([
            "--token",
            TOKEN,
            "--regions",
            &urls.join(","),
            "--users",
            "1000000",
        ])
        .args([
            "--concurrency",
            "2",
            "--pace-ms",
            "20",
            "--groups",
            "0",
            "--settle-secs",
            "60",
            "--json",
        ])
        .arg("--duration")
        .arg(duration.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let started = Instant::now();
    let mut rto = Vec::new();
    let mut kill_at = Vec::new();
    for k in 0..kills {
        // idp-sim is on eu again: its 201 count there grows.
        let deadline = Instant::now() + Duration::from_secs(30);
        let base = posts(&http, &c.url(0)).await;
        while posts(&http, &c.url(0)).await < base + 5 {
            anyhow::ensure!(
                Instant::now() < deadline,
                "round {k}: idp-sim did not come back to eu"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let us_before = posts(&http, &c.url(1)).await;
        c.kill9(0);
        let t0 = Instant::now();
        kill_at.push(started.elapsed().as_millis() as u64);
        loop {
            if let Some(a) = answer(&c, 1).await {
                if !a.is_empty() && !a.contains(&eu) {
                    break;
                }
            }
            anyhow::ensure!(
                t0.elapsed() < Duration::from_secs(30),
                "round {k}: eu still answered after 30 s"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let took = t0.elapsed().as_secs_f64() * 1000.0;
        eprintln!("kill {}: answers without eu after {took:.0} ms", k + 1);
        rto.push(took);
        // eu stays dead until idp-sim has succeeded elsewhere (us), so its gap is the time to a
        // success in another region, not a race with eu's restart.
        while posts(&http, &c.url(1)).await <= us_before {
            anyhow::ensure!(
                t0.elapsed() < Duration::from_secs(30),
                "round {k}: idp-sim never reached us"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        c.restart(0)?;
        let t1 = Instant::now();
        while answer(&c, 1).await.is_none_or(|a| !a.contains(&eu)) {
            anyhow::ensure!(
                t1.elapsed() < Duration::from_secs(30),
                "round {k}: eu not answered again"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let out = tokio::task::spawn_blocking(move || sim.wait_with_output()).await??;
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    // Each kill's gap: the first listed gap that ended after the kill.
    let gaps: Vec<(u64, u64)> =
        serde_json::from_value(report["gaps_over_200ms"].clone()).unwrap_or_default();
    let mut idp = Vec::new();
    for at in &kill_at {
        if let Some((_, len)) = gaps.iter().find(|(end, _)| end > at) {
            idp.push(*len as f64);
        }
    }
    rto.sort_by(f64::total_cmp);
    idp.sort_by(f64::total_cmp);
    println!("| measure | n | p50 ms | p99 ms | max ms |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    println!(
        "| kill -9 → first answer without the dead region | {} | {:.0} | {:.0} | {:.0} |",
        rto.len(),
        pct(&rto, 0.5),
        pct(&rto, 0.99),
        rto.last().copied().unwrap_or(f64::NAN)
    );
    println!(
        "| kill -9 → idp-sim's next successful request (its gap) | {} | {:.0} | {:.0} | {:.0} |",
        idp.len(),
        pct(&idp, 0.5),
        pct(&idp, 0.99),
        idp.last().copied().unwrap_or(f64::NAN)
    );
    println!(
        "\nidp-sim: {} requests, {} acknowledged writes, errors {}, failovers {}; read back from 3 regions: \
         missing {}, wrong {}, deactivated active {}",
        report["requests"], report["acknowledged_writes"], report["errors"], report["failovers"],
        report["acknowledged_missing"], report["acknowledged_wrong"], report["deactivated_active"]
    );
    eprintln!(
        "idp-sim served by {}; gaps over 200 ms: {:?}; kills at {kill_at:?}",
        report["addresses"], report["gaps_over_200ms"]
    );
    Ok(())
}
