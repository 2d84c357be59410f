//! The HTTP client of the benchmark and latency samples.

use super::*;

pub(crate) struct Http {
    pub(crate) client: reqwest::Client,
}

/// One answer: status, body bytes, milliseconds from send to the last body byte, and the
/// `Geoscim-Members-Total` header of a group answer that shows members.
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) body: Vec<u8>,
    pub(crate) ms: f64,
    pub(crate) members_total: Option<u64>,
}

impl Answer {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
    pub(crate) fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

impl Http {
    pub(crate) fn new() -> Http {
        Http {
            client: reqwest::Client::builder()
                .tcp_nodelay(true)
                .pool_max_idle_per_host(4)
                .timeout(Duration::from_secs(120))
                .build()
                .expect("client"),
        }
    }

    pub(crate) async fn send(
        &self,
        method: reqwest::Method,
        url: &str,
        body: Option<&Value>,
    ) -> Answer {
        let mut rb = self
            .client
            .request(method, url)
            .header("Authorization", format!("Bearer {TOKEN}"));
        if let Some(b) = body {
            rb = rb
                .header("Content-Type", "application/scim+json")
                .body(serde_json::to_vec(b).expect("json"));
        }
        let started = Instant::now();
        let (status, body, members_total) = match rb.send().await {
            Ok(r) => {
                let status = r.status().as_u16();
                let total = r
                    .headers()
                    .get("geoscim-members-total")
                    .and_then(|v| v.to_str().ok()?.parse().ok());
                (
                    status,
                    r.bytes().await.map(|b| b.to_vec()).unwrap_or_default(),
                    total,
                )
            }
            Err(_) => (0, Vec::new(), None),
        };
        Answer {
            status,
            body,
            ms: started.elapsed().as_secs_f64() * 1e3,
            members_total,
        }
    }

    pub(crate) async fn get(&self, url: &str) -> Answer {
        self.send(reqwest::Method::GET, url, None).await
    }
    pub(crate) async fn patch(&self, url: &str, body: &Value) -> Answer {
        self.send(reqwest::Method::PATCH, url, Some(body)).await
    }

    pub(crate) async fn health(&self, base: &str) -> Value {
        match self
            .client
            .get(format!("{base}/health"))
            .timeout(Duration::from_secs(10))
            .send()
            .await
        {
            Ok(r) => r.json().await.unwrap_or(Value::Null),
            Err(_) => Value::Null,
        }
    }
}

pub(crate) fn patch_body(ops: Vec<Value>) -> Value {
    json!({"schemas": [PATCH_OP_SCHEMA], "Operations": ops})
}

pub(crate) fn add_op(ids: &[String]) -> Value {
    let values: Vec<Value> = ids.iter().map(|id| json!({"value": id})).collect();
    json!({"op": "add", "path": "members", "value": values})
}

pub(crate) fn remove_op(id: &str) -> Value {
    json!({"op": "remove", "path": format!("members[value eq \"{id}\"]")})
}

/// Latencies of one kind of request, with the count of non-2xx answers.
#[derive(Default, Clone)]
pub(crate) struct Samples {
    pub(crate) ms: Vec<f64>,
    pub(crate) errors: usize,
}

impl Samples {
    pub(crate) fn push(&mut self, a: &Answer) {
        self.ms.push(a.ms);
        if !a.ok() {
            self.errors += 1;
            if self.errors <= 3 {
                eprintln!(
                    "bench_scale: answer {}: {}",
                    a.status,
                    String::from_utf8_lossy(&a.body[..a.body.len().min(300)])
                );
            }
        }
    }
    pub(crate) fn sorted(&self) -> Vec<f64> {
        let mut v = self.ms.clone();
        v.sort_by(f64::total_cmp);
        v
    }
    pub(crate) fn p(&self, q: f64) -> f64 {
        pct(&self.sorted(), q)
    }
    /// "p50 / p99" in ms, with the error count when there are errors.
    pub(crate) fn cell(&self) -> String {
        let e = if self.errors > 0 {
            format!(" ({} errors)", self.errors)
        } else {
            String::new()
        };
        format!("{} / {}{e}", ms(self.p(0.5)), ms(self.p(0.99)))
    }
}

pub(crate) fn ms(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}
