//! DNS load generator: UDP queries to one server as fast as a bounded window allows, for a
//! bounded time; prints queries/s and latency percentiles as one `BENCH_DNS` line.
//!
//! usage: bench_dns SERVER NAME [SECONDS] [SOCKETS] [WINDOW] [SUBNET]
//!
//! Each of SOCKETS tasks keeps up to WINDOW queries in flight on its own socket (ids match
//! answers to send times); an answer not back within 1 s counts as lost. Only loopback or
//! namespace addresses are meant as targets.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hickory_proto::rr::{Name, RecordType};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    anyhow::ensure!(
        args.len() >= 3,
        "usage: bench_dns SERVER NAME [SECONDS] [SOCKETS] [WINDOW] [SUBNET]"
    );
    let server: SocketAddr = args[1].parse()?;
    let name = Name::from_ascii(format!("{}.", args[2].trim_end_matches('.')))?;
    let secs: u64 = args.get(3).map_or(Ok(5), |s| s.parse())?;
    let sockets: usize = args.get(4).map_or(Ok(4), |s| s.parse())?;
    let window: usize = args.get(5).map_or(Ok(32), |s| s.parse())?;
    let subnet = match args.get(6) {
        Some(s) => {
            let n: ipnet::IpNet = s.parse()?;
            Some((n.network(), n.prefix_len()))
        }
        None => None,
    };
    anyhow::ensure!(
        secs <= 600 && sockets <= 64 && window <= 1024,
        "bounds: 600 s, 64 sockets, 1024 window"
    );
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for s in 0..sockets {
        let name = name.clone();
        tasks.push(tokio::spawn(async move {
            worker(server, name, subnet, window, deadline, s as u16).await
        }));
    }
    let (mut lat, mut sent, mut lost, mut errors) = (Vec::new(), 0u64, 0u64, 0u64);
    for t in tasks {
        let r = t.await??;
        lat.extend(r.0);
        sent += r.1;
        lost += r.2;
        errors += r.3;
    }
    lat.sort_unstable();
    let pct = |p: f64| -> f64 {
        if lat.is_empty() {
            return 0.0;
        }
        let i = ((lat.len() as f64 - 1.0) * p).round() as usize;
        lat[i] as f64 / 1000.0
    };
    println!(
        "BENCH_DNS server={server} seconds={secs} sent={sent} answered={} lost={lost} \
         errors={errors} qps={:.0} p50_ms={:.3} p99_ms={:.3} p999_ms={:.3}",
        lat.len(),
        lat.len() as f64 / secs as f64,
        pct(0.5),
        pct(0.99),
        pct(0.999)
    );
    Ok(())
}

/// One socket's loop: latencies (µs), sent, lost, non-NOERROR answers.
async fn worker(
    server: SocketAddr,
    name: Name,
    subnet: Option<(std::net::IpAddr, u8)>,
    window: usize,
    deadline: Instant,
    seed: u16,
) -> anyhow::Result<(Vec<u64>, u64, u64, u64)> {
    let socket = tokio::net::UdpSocket::bind(if server.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    })
    .await?;
    socket.connect(server).await?;
    let mut in_flight: HashMap<u16, Instant> = HashMap::new();
    let (mut lat, mut sent, mut lost, mut errors) = (Vec::new(), 0u64, 0u64, 0u64);
    let mut id = seed.wrapping_mul(4099);
    let mut buf = vec![0u8; 4096];
    let templ = geoscim::dns::client::query_message(0, &name, RecordType::A, subnet).to_vec()?;
    while Instant::now() < deadline || !in_flight.is_empty() {
        while Instant::now() < deadline && in_flight.len() < window {
            id = id.wrapping_add(1);
            if in_flight.contains_key(&id) {
                continue;
            }
            let mut q = templ.clone();
            q[..2].copy_from_slice(&id.to_be_bytes());
            if socket.send(&q).await.is_ok() {
                in_flight.insert(id, Instant::now());
                sent += 1;
            }
        }
        match tokio::time::timeout(Duration::from_millis(50), socket.recv(&mut buf)).await {
            Ok(Ok(n)) if n >= 12 => {
                let rid = u16::from_be_bytes([buf[0], buf[1]]);
                if let Some(t) = in_flight.remove(&rid) {
                    lat.push(t.elapsed().as_micros() as u64);
                    // RCODE is the low 4 bits of byte 3 (no full parse: keep the generator cheap).
                    if buf[3] & 0x0f != 0 {
                        errors += 1;
                    }
                }
            }
            _ => {}
        }
        let now = Instant::now();
        let before = in_flight.len();
        in_flight.retain(|_, t| now.duration_since(*t) < Duration::from_secs(1));
        lost += (before - in_flight.len()) as u64;
        if Instant::now() >= deadline + Duration::from_secs(1) {
            lost += in_flight.len() as u64;
            break;
        }
    }
    Ok((lat, sent, lost, errors))
}
