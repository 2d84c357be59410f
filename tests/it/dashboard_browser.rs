//! The dashboard in a real browser: Debian's `chromium`, headless, driven over WebDriver by
//! `chromium-driver` (fantoccini), against three real regions in their own network namespaces
//! on one bridged "wan" (the plumbing of [`crate::partition`]).
//!
//! One session at 1280×800: sign in on region `a`; see three healthy regions; cut `b` off,
//! deactivate a user on `a` (the quorum is `a` + `c`) and see it pending (missing in `b`); write
//! the same attribute on both sides; heal, and watch the `concurrent-scalar` record appear in
//! the open feed without a reload; open it and see both values, their regions and the rule; see
//! the pending list empty; kill `c` and see it turn unhealthy; then a narrow-width look.
//! Screenshots go to `build/dashboard/` (ignored); with `GEOSCIM_UPDATE_SCREENSHOT=1` the
//! cluster screenshot also replaces `docs/dashboard.png`.
//!
//! Needs root, `ip netns`, `chromium` and `chromedriver` (scripts/bootstrap installs them):
//! skipped elsewhere, except under CI.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::partition::{spawn_in, Bridged};

const TOKEN: &str = "dashboard-test-token";
const ADMIN_TOKEN: &str = "dashboard-admin-token-0123456789";
const USER: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
const QUIC_PORT: u16 = 7100;
const HTTP_PORT: u16 = 8080;

fn wan_ip(i: usize) -> String {
    format!("10.218.0.{}", i + 1)
}

/// Three regions in namespaces on one bridge; dropping it stops them and removes everything.
struct Wan {
    net: Bridged,
    /// Each region's HTTP base URL from the root namespace (its management address).
    urls: Vec<String>,
    _tmp: tempfile::TempDir,
}

impl Wan {
    fn start(names: &[&str]) -> Option<Wan> {
        let mut wan = Bridged::start(names, 217, wan_ip)?;
        let tmp = tempfile::tempdir().unwrap();
        let certs = tmp.path().join("certs");
        crate::harness::certs(&certs, names);
        let admin = crate::harness::admin_tokens_toml(ADMIN_TOKEN);
        let mut urls = Vec::new();
        for (i, r) in names.iter().enumerate() {
            // HTTP on every address of the namespace: the management one for the browser and
            // the test, the wan one for the other regions' cluster views.
            let mut text = format!(
                "region = \"{r}\"\ndata_dir = \"{}\"\n[http]\nlisten = \"0.0.0.0:{HTTP_PORT}\"\n\
                 [replication]\nlisten = \"{}:{QUIC_PORT}\"\ncerts_dir = \"{}\"\n",
                tmp.path().join(r).display(),
                wan_ip(i),
                certs.display(),
            );
            for (j, peer) in names.iter().enumerate().filter(|(j, _)| *j != i) {
                text += &format!(
                    "[[replication.peers]]\nregion = \"{peer}\"\naddr = \"{}:{QUIC_PORT}\"\n",
                    wan_ip(j)
                );
            }
            text += "[dashboard]\nprobe_timeout_ms = 500\nsample_interval_secs = 2\n";
            for (j, peer) in names.iter().enumerate().filter(|(j, _)| *j != i) {
                text += &format!(
                    "[[dashboard.regions]]\nname = \"{peer}\"\nurl = \"http://{}:{HTTP_PORT}\"\n",
                    wan_ip(j)
                );
            }
            let config = tmp.path().join(format!("{r}.toml"));
            std::fs::write(&config, text).unwrap();
            let (child, _) = spawn_in(
                &wan.links[i].0,
                &config,
                TOKEN,
                &[("GEOSCIM_ADMIN_TOKENS", &admin)],
            );
            wan.net.children.push(child);
            urls.push(format!("http://{}:{HTTP_PORT}", wan.mgmt[i]));
        }
        Some(Wan {
            net: wan,
            urls,
            _tmp: tmp,
        })
    }

    fn set_link(&self, i: usize, up: bool) {
        self.net.set_link(i, up);
    }

    /// kill -9 region `i`.
    fn kill(&mut self, i: usize) {
        let _ = self.net.net.children[i].kill();
        let _ = self.net.net.children[i].wait();
    }
}

/// chromedriver on a free loopback port; killed on drop.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

fn start_driver() -> Option<Driver> {
    let (Some(driver), Some(_)) = (which("chromedriver"), which("chromium")) else {
        if std::env::var_os("CI").is_some() {
            panic!(
                "chromium and chromedriver are missing under CI (scripts/bootstrap installs them)"
            );
        }
        println!(
            "SKIPPED: chromium or chromedriver not installed (scripts/bootstrap installs them)"
        );
        return None;
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(driver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "chromedriver did not listen within 20 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Some(Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
    })
}

async fn browser(driver: &Driver) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({"binary": "/usr/bin/chromium", "args": [
            "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--no-proxy-server", "--window-size=1280,800", "--lang=en-US"]}),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a WebDriver session")
}

/// Run `check` until it returns `Ok`, for at most `secs` seconds; then fail with its last word.
async fn until<T, F, Fut>(secs: u64, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        match check().await {
            Ok(v) => return v,
            Err(why) if Instant::now() >= deadline => {
                panic!("timed out after {secs} s waiting for {what}; last: {why}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// The text of every element matching `css`.
async fn texts(c: &Client, css: &str) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(found) = c.find_all(Locator::Css(css)).await {
        for e in found {
            out.push(e.text().await.unwrap_or_default());
        }
    }
    out
}

async fn attr_of(c: &Client, css: &str, attr: &str) -> Option<String> {
    c.find(Locator::Css(css))
        .await
        .ok()?
        .attr(attr)
        .await
        .ok()?
}

fn shots_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("build/dashboard");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn screenshot(c: &Client, name: &str) -> PathBuf {
    let png = c.screenshot().await.expect("a screenshot");
    let path = shots_dir().join(format!("{name}.png"));
    std::fs::write(&path, png).unwrap();
    println!("screenshot: {}", path.display());
    path
}

async fn click_view(c: &Client, view: &str) {
    c.find(Locator::Css(&format!("nav a[data-view=\"{view}\"]")))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

/// A SCIM request as tenant `t1`.
async fn scim(
    http: &reqwest::Client,
    base: &str,
    m: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut b = http
        .request(m, format!("{base}/scim/v2{path}"))
        .bearer_auth(TOKEN)
        .header("content-type", "application/scim+json");
    if let Some(body) = body {
        b = b.body(body.to_string());
    }
    let r = b.send().await.expect("a SCIM answer");
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn patch(path: &str, value: Value) -> Value {
    json!({"schemas": [PATCH_OP], "Operations": [{"op": "replace", "path": path, "value": value}]})
}

async fn connected_peers(http: &reqwest::Client, base: &str) -> usize {
    let h: Value = match http.get(format!("{base}/health")).send().await {
        Ok(r) => r.json().await.unwrap_or(Value::Null),
        Err(_) => Value::Null,
    };
    h["replication"]["peers"].as_array().map_or(0, |p| {
        p.iter().filter(|p| p["connected"] == json!(true)).count()
    })
}

#[tokio::test]
async fn the_dashboard_shows_health_conflicts_and_pending_offboardings_live_in_a_browser() {
    let names = ["a", "b", "c"];
    let Some(mut wan) = Wan::start(&names) else {
        return;
    };
    let Some(driver) = start_driver() else {
        return;
    };
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let (a, b) = (wan.urls[0].clone(), wan.urls[1].clone());
    for url in &wan.urls {
        until(60, "every region connected to both peers", || async {
            let n = connected_peers(&http, url).await;
            if n == 2 {
                Ok(())
            } else {
                Err(format!("{url}: {n} peers connected"))
            }
        })
        .await;
    }
    let c = browser(&driver).await;
    c.set_window_size(1280, 800).await.unwrap();

    // Sign in: first a tenant token (refused), then the admin token.
    c.goto(&format!("{a}/dashboard")).await.unwrap();
    c.find(Locator::Css("#token"))
        .await
        .unwrap()
        .send_keys(TOKEN)
        .await
        .unwrap();
    c.find(Locator::Css("#sign-in"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    // The refusal is shown once the sign-in request has come back.
    until(20, "the sign-in refusal", || async {
        let refused = texts(&c, ".error").await.join(" ");
        if refused.contains("not an admin token") {
            Ok(())
        } else {
            Err(format!("{refused:?}"))
        }
    })
    .await;
    c.find(Locator::Css("#token"))
        .await
        .unwrap()
        .send_keys(ADMIN_TOKEN)
        .await
        .unwrap();
    c.find(Locator::Css("#sign-in"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let source = c.source().await.unwrap();
    assert!(
        !source.contains(ADMIN_TOKEN),
        "the page must not hold the token"
    );

    // Three healthy regions.
    until(30, "three healthy regions in the cluster view", || async {
        let rows = texts(&c, "#cluster-table tbody tr").await;
        let healthy = texts(&c, "#cluster-table tbody tr[data-health=\"healthy\"]").await;
        if rows.len() == 3 && healthy.len() == 3 {
            Ok(())
        } else {
            Err(format!("{rows:?}"))
        }
    })
    .await;
    let cluster_shot = screenshot(&c, "cluster").await;
    if std::env::var_os("GEOSCIM_UPDATE_SCREENSHOT").is_some() {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/dashboard.png");
        std::fs::copy(&cluster_shot, docs).unwrap();
    }

    // Two users everywhere, then b cut off.
    let user = |name: &str| json!({"schemas": [USER], "userName": name, "active": true});
    let (s, leaver) = scim(
        &http,
        &a,
        Method::POST,
        "/Users",
        Some(user("leaver@dash.test")),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{leaver}");
    let (s, both) = scim(
        &http,
        &a,
        Method::POST,
        "/Users",
        Some(user("both@dash.test")),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{both}");
    let (leaver, both) = (
        leaver["id"].as_str().unwrap().to_string(),
        both["id"].as_str().unwrap().to_string(),
    );
    until(30, "both users in b", || async {
        let (s1, _) = scim(&http, &b, Method::GET, &format!("/Users/{leaver}"), None).await;
        let (s2, _) = scim(&http, &b, Method::GET, &format!("/Users/{both}"), None).await;
        if s1 == StatusCode::OK && s2 == StatusCode::OK {
            Ok(())
        } else {
            Err(format!("{s1} {s2}"))
        }
    })
    .await;
    wan.set_link(1, false);
    let cut = Instant::now();
    // The deactivation is acknowledged by a and c (the quorum); b lacks it.
    let (s, v) = scim(
        &http,
        &a,
        Method::PATCH,
        &format!("/Users/{leaver}"),
        Some(patch("active", json!(false))),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = scim(
        &http,
        &a,
        Method::PATCH,
        &format!("/Users/{both}"),
        Some(patch("displayName", json!("Written in a"))),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = scim(
        &http,
        &b,
        Method::PATCH,
        &format!("/Users/{both}"),
        Some(patch("displayName", json!("Written in b"))),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");

    click_view(&c, "offboardings").await;
    let row = format!("#pending-table tr[data-id=\"{leaver}\"]");
    let pending = until(20, "the deactivation listed as pending", || async {
        let t = texts(&c, &row).await.join(" ");
        if t.contains("deactivate") {
            Ok(t)
        } else {
            Err(t)
        }
    })
    .await;
    let missing = texts(&c, &format!("{row} .missing")).await.join(" ");
    assert_eq!(missing.trim(), "b", "pending row: {pending}");
    screenshot(&c, "pending").await;

    // The feed, open before the heal; a marker tells whether the page was reloaded.
    click_view(&c, "conflicts").await;
    until(10, "the live feed to connect", || async {
        let t = texts(&c, "#feed-state").await.join("");
        if t.contains("live") {
            Ok(())
        } else {
            Err(t)
        }
    })
    .await;
    c.execute("window.__notReloaded = true; return true;", vec![])
        .await
        .unwrap();
    let url_before = c.current_url().await.unwrap();
    wan.set_link(1, true);
    println!("partition held for {:?}", cut.elapsed());
    let entry = "#conflict-list li[data-rule=\"concurrent-scalar\"]".to_string();
    until(90, "the concurrent-scalar record in the feed", || async {
        let t = texts(&c, &entry).await.join(" ");
        if t.contains(&both) {
            Ok(())
        } else {
            Err(format!("feed: {:?}", texts(&c, "#conflict-list li").await))
        }
    })
    .await;
    let kept = c
        .execute("return window.__notReloaded === true;", vec![])
        .await
        .unwrap();
    assert_eq!(kept, json!(true), "the page was reloaded");
    assert_eq!(c.current_url().await.unwrap(), url_before);
    // Open it: both values with their regions, and the rule.
    c.find(Locator::Css(&format!("{entry} summary")))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let detail = texts(&c, &format!("{entry} details")).await.join(" ");
    for want in [
        "Written in a",
        "Written in b",
        "concurrent-scalar",
        "displayName",
    ] {
        assert!(detail.contains(want), "{want} not in {detail}");
    }
    let mut regions = texts(&c, &format!("{entry} tr.candidate td:first-child")).await;
    regions.sort();
    assert_eq!(regions, ["a", "b"], "{detail}");
    screenshot(&c, "conflict").await;

    // Healed: nothing pending.
    click_view(&c, "offboardings").await;
    until(60, "the pending list to empty", || async {
        let hidden = attr_of(&c, "#pending-empty", "hidden").await;
        let rows = texts(&c, "#pending-table tbody tr").await;
        if hidden.is_none() && rows.is_empty() {
            Ok(())
        } else {
            Err(format!("{rows:?}"))
        }
    })
    .await;

    // Kill c: it turns unhealthy.
    click_view(&c, "cluster").await;
    wan.kill(2);
    let killed = until(30, "region c unhealthy", || async {
        let h = attr_of(&c, "#cluster-table tr[data-region=\"c\"]", "data-health").await;
        match h.as_deref() {
            Some("healthy") | None => Err(format!("{h:?}")),
            Some(other) => Ok(other.to_string()),
        }
    })
    .await;
    let row_text = texts(&c, "#cluster-table tr[data-region=\"c\"]")
        .await
        .join(" ");
    assert!(
        row_text.contains('✖'),
        "not told by colour alone: {row_text}"
    );
    println!("region c is {killed} in a's view");
    screenshot(&c, "unhealthy").await;

    // Charts, then a narrow window, keyboard focus on the first view link.
    click_view(&c, "charts").await;
    until(20, "charts drawn", || async {
        let n = c
            .find_all(Locator::Css("#charts svg"))
            .await
            .map(|v| v.len())
            .unwrap_or(0);
        if n == 6 {
            Ok(())
        } else {
            Err(format!("{n} charts"))
        }
    })
    .await;
    screenshot(&c, "charts").await;
    c.set_window_size(420, 900).await.unwrap();
    click_view(&c, "cluster").await;
    let overflow = c
        .execute(
            "return document.documentElement.scrollWidth <= window.innerWidth + 1;",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(overflow, json!(true), "the page scrolls sideways at 420 px");
    screenshot(&c, "narrow").await;
    c.close().await.unwrap();
}
