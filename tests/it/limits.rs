//! Slow or idle clients hold nothing beyond the configured timeouts and caps (real process,
//! raw TCP): half-sent headers are dropped, connections beyond the cap are closed at once, a
//! body that never completes gets 408.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use reqwest::Method;

use crate::harness::{eventually, Region};

fn addr(r: &Region) -> String {
    r.url.trim_start_matches("http://").to_string()
}

/// Has the server closed this connection (a read returns EOF or a reset)?
fn closed(s: &mut TcpStream) -> bool {
    s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
    let mut buf = [0u8; 512];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue, // an error answer before closing: keep reading
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return false,
            Err(_) => return true,
        }
    }
}

async fn metric(r: &Region, series: &str) -> f64 {
    crate::harness::sample(&r.metrics().await, series).unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread")]
async fn half_sent_headers_are_dropped_and_connections_beyond_the_cap_are_refused() {
    let r = Region::start_with(
        &["t1"],
        &[
            ("GEOSCIM_HTTP__HEADER_READ_TIMEOUT_MS", "6000"),
            ("GEOSCIM_HTTP__MAX_CONNECTIONS", "300"),
            ("GEOSCIM_HTTP__MAX_IN_FLIGHT", "100"),
        ],
    );
    r.wait_healthy().await;
    let started = Instant::now();
    // 500 clients each send half a request header and then nothing. (How long opening them
    // takes depends on the machine's load: the 6 s the server waits for a header leave room, so
    // that the cap is full when the last ones arrive.)
    let mut conns: Vec<TcpStream> = (0..500)
        .map(|_| {
            let mut s = TcpStream::connect(addr(&r)).unwrap();
            s.write_all(b"GET /scim/v2/Users HTTP/1.1\r\nHost: x\r\nX-Half: ")
                .unwrap();
            s
        })
        .collect();
    // Beyond the cap (300) the server refused at once; within it, each is closed once its
    // header has not arrived within 6 s.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let open = conns.iter_mut().map(closed).filter(|c| !c).count();
        if open == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{open} half-sent connections still open"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "500 half-sent connections all closed after {:?}",
        started.elapsed()
    );
    assert!(metric(&r, "geoscim_http_connections_refused_total").await >= 150.0);
    // The slots are free again: a normal client gets its answer.
    let (s, v) = r.req(Method::GET, "/Users?count=1", None).await;
    assert!(s.is_success(), "{v}");
    eventually(10, "no connection left open but ours", || async {
        (metric(&r, "geoscim_http_connections").await <= 2.0).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_that_never_completes_gets_408() {
    let r = Region::start_with(&["t1"], &[("GEOSCIM_HTTP__BODY_READ_TIMEOUT_MS", "300")]);
    r.wait_healthy().await;
    let mut s = TcpStream::connect(addr(&r)).unwrap();
    let head = format!(
        "POST /scim/v2/Users HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/scim+json\r\nContent-Length: 100\r\n\r\n{{\"sche",
        r.token()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&answer).contains("\"status\"") {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("body_read_timeout_ms"), "{text}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(metric(&r, "geoscim_http_body_timeouts_total").await >= 1.0);
}
