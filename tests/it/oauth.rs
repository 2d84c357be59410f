//! OAuth 2.0 client credentials against real regions: tokens from `/oauth/token` (HTTP Basic
//! and form body), checked with a real JOSE verification of what was issued, used at another
//! region; secret rotation across restarts; refused secrets and tokens (wrong secret, expired,
//! tampered, wrong audience or issuer, unknown key) with their `WWW-Authenticate`; static
//! tokens unchanged. Keys and clients come from the real CLI (`signing-key create`,
//! `client create`, `client rotate`).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::harness::{eventually, Cluster, Region};

const ISSUER: &str = "https://scim.geoscim.test";
const AUDIENCE: &str = "https://scim.geoscim.test/scim/v2";

/// Run the geoscim binary; its stdout.
fn geoscim(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_geoscim"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "geoscim {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The value of the first `name = "…"` line after `after` in a CLI's output.
fn toml_value(text: &str, after: &str, name: &str) -> String {
    let rest = &text[text.find(after).unwrap()..];
    rest.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} = \"")))
        .and_then(|v| v.strip_suffix('"'))
        .unwrap()
        .to_string()
}

/// A signing key made by `geoscim signing-key create`: (kid, file, x).
struct Key {
    kid: String,
    file: std::path::PathBuf,
    x: String,
}

fn signing_key(dir: &Path, kid: &str) -> Key {
    let file = dir.join(format!("{kid}.jwt.key"));
    let out = geoscim(&[
        "signing-key",
        "create",
        "--kid",
        kid,
        "--out",
        file.to_str().unwrap(),
    ]);
    Key {
        kid: kid.to_string(),
        x: toml_value(&out, "[[oauth.keys]]", "x"),
        file,
    }
}

/// A client made by `geoscim client create`: (id, secret, hash).
struct Client {
    id: String,
    secret: String,
    hash: String,
}

fn line_value(text: &str, prefix: &str) -> String {
    text.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .unwrap()
        .to_string()
}

fn client(tenant: &str) -> Client {
    let out = geoscim(&["client", "create", "--tenant", tenant]);
    let hash = out
        .lines()
        .find_map(|l| l.strip_prefix("secret_sha256 = [\""))
        .and_then(|v| v.strip_suffix("\"]"))
        .unwrap()
        .to_string();
    Client {
        id: line_value(&out, "client_id: "),
        secret: line_value(&out, "client_secret: "),
        hash,
    }
}

/// A second secret for `client`, from `geoscim client rotate`: (secret, hash).
fn rotate(client: &Client) -> (String, String) {
    let out = geoscim(&["client", "rotate", "--client-id", &client.id]);
    let hash = out
        .lines()
        .find_map(|l| l.strip_prefix("secret_sha256 = [\"<current hash>\", \""))
        .and_then(|v| v.strip_suffix("\"]"))
        .unwrap()
        .to_string();
    (line_value(&out, "client_secret: "), hash)
}

/// The `[oauth]` TOML of a region signing with `own`, trusting `keys`, with `clients`
/// (id, tenant, hashes).
fn oauth_toml(own: &Key, keys: &[&Key], clients: &[(&str, &str, &[&str])], extra: &str) -> String {
    let mut t = format!(
        "[oauth]\nissuer = \"{ISSUER}\"\naudience = \"{AUDIENCE}\"\n{extra}\n\
         signing_key = {{kid = \"{}\", file = \"{}\"}}\n",
        own.kid,
        own.file.display()
    );
    for k in keys {
        t += &format!("[[oauth.keys]]\nkid = \"{}\"\nx = \"{}\"\n", k.kid, k.x);
    }
    for (id, tenant, hashes) in clients {
        let hashes: Vec<String> = hashes.iter().map(|h| format!("\"{h}\"")).collect();
        t += &format!(
            "[[oauth.clients]]\nclient_id = \"{id}\"\ntenant = \"{tenant}\"\n\
             secret_sha256 = [{}]\n",
            hashes.join(", ")
        );
    }
    t
}

/// Write a region's config: the cluster's file without any `[oauth]`, then `oauth`.
fn set_oauth(cluster: &Cluster, region: &str, oauth: &str) {
    let path = cluster.config(region);
    let text = std::fs::read_to_string(&path).unwrap();
    let base = text
        .split("\n[oauth]")
        .next()
        .unwrap()
        .trim_end()
        .to_string();
    std::fs::write(&path, format!("{base}\n\n{oauth}")).unwrap();
}

/// POST /oauth/token with HTTP Basic.
async fn token_basic(region: &Region, id: &str, secret: &str) -> reqwest::Response {
    region
        .client
        .post(format!("{}/oauth/token", region.url))
        .basic_auth(id, Some(secret))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("grant_type=client_credentials")
        .send()
        .await
        .unwrap()
}

/// POST /oauth/token with the credentials in the form body.
async fn token_form(region: &Region, id: &str, secret: &str) -> reqwest::Response {
    region
        .client
        .post(format!("{}/oauth/token", region.url))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "grant_type=client_credentials&client_id={id}&client_secret={secret}"
        ))
        .send()
        .await
        .unwrap()
}

/// A 200 token answer's access token (checks the RFC 6749 §5.1 shape and headers).
async fn access_token(r: reqwest::Response, lifetime: u64) -> String {
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["cache-control"], "no-store");
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["token_type"], "Bearer", "{v}");
    assert_eq!(v["expires_in"], lifetime, "{v}");
    v["access_token"].as_str().unwrap().to_string()
}

/// The OAuth error code of a refused token request, checking the status.
async fn oauth_error(r: reqwest::Response, status: StatusCode) -> String {
    assert_eq!(r.status(), status);
    if status == StatusCode::UNAUTHORIZED {
        let www = r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(www.starts_with("Basic"), "{www}");
    }
    assert_eq!(r.headers()["cache-control"], "no-store");
    let v: Value = r.json().await.unwrap();
    assert!(v["error_description"].is_string(), "{v}");
    v["error"].as_str().unwrap().to_string()
}

/// A GET /Users with this bearer token: status, `WWW-Authenticate`, body.
async fn users_with(region: &Region, token: &str) -> (StatusCode, String, Value) {
    let r = region.send(token, Method::GET, "/Users", None, &[]).await;
    let status = r.status();
    let www = r
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, www, r.json().await.unwrap_or(Value::Null))
}

/// A refused bearer JWT: 401, a SCIM error body, `Bearer error="invalid_token"`; the detail.
async fn refused_token(region: &Region, token: &str) -> String {
    let (status, www, body) = users_with(region, token).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(
        www.starts_with("Bearer error=\"invalid_token\", error_description=\""),
        "{www}"
    );
    assert_eq!(body["status"], "401", "{body}");
    assert_eq!(
        body["schemas"][0], "urn:ietf:params:scim:api:messages:2.0:Error",
        "{body}"
    );
    let detail = body["detail"].as_str().unwrap().to_string();
    assert!(www.contains(&detail), "{www} / {detail}");
    detail
}

fn header(kid: &str) -> Header {
    let mut h = Header::new(Algorithm::EdDSA);
    h.kid = Some(kid.to_string());
    h.typ = Some("at+jwt".into());
    h
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test]
async fn tokens_from_one_region_work_at_another_and_secrets_rotate() {
    let cluster = Cluster::new(&["oa", "ob"]);
    let keys_dir = cluster.tmp.path().join("jwt");
    let (ka, kb) = (
        signing_key(&keys_dir, "oa-1"),
        signing_key(&keys_dir, "ob-1"),
    );
    let c = client("t1");
    let hash = c.hash.as_str();
    set_oauth(
        &cluster,
        "oa",
        &oauth_toml(&ka, &[&ka, &kb], &[(&c.id, "t1", &[hash])], ""),
    );
    set_oauth(
        &cluster,
        "ob",
        &oauth_toml(&kb, &[&ka, &kb], &[(&c.id, "t1", &[hash])], ""),
    );
    let mut regions = cluster.start_all();
    let (a, b) = (&regions[0], &regions[1]);

    // A token by HTTP Basic and one by form body, both from region a.
    let basic = access_token(token_basic(a, &c.id, &c.secret).await, 3600).await;
    let form = access_token(token_form(a, &c.id, &c.secret).await, 3600).await;
    assert_ne!(basic, form, "every token has its own jti");

    // What was issued, verified with jsonwebtoken and a's public key from the CLI.
    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.set_issuer(&[ISSUER]);
    validation.set_audience(&[AUDIENCE]);
    validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
    let key = DecodingKey::from_ed_components(&ka.x).unwrap();
    let data = jsonwebtoken::decode::<Value>(&basic, &key, &validation).unwrap();
    assert_eq!(data.header.kid.as_deref(), Some("oa-1"));
    assert_eq!(data.header.typ.as_deref(), Some("at+jwt"));
    let claims = data.claims;
    assert_eq!(claims["sub"], c.id.as_str());
    assert_eq!(claims["client_id"], c.id.as_str());
    assert_eq!(claims["tenant"], "t1");
    let (iat, exp) = (
        claims["iat"].as_u64().unwrap(),
        claims["exp"].as_u64().unwrap(),
    );
    assert_eq!(exp - iat, 3600);
    assert!(iat.abs_diff(now()) < 60, "{claims}");
    assert!(claims["jti"].as_str().is_some_and(|j| !j.is_empty()));
    // b's key does not verify a's token: the kid matters.
    let b_key = DecodingKey::from_ed_components(&kb.x).unwrap();
    assert!(jsonwebtoken::decode::<Value>(&basic, &b_key, &validation).is_err());

    // a's token at region b: a SCIM create and a read of it, as tenant t1.
    let created = b
        .req_as(
            &form,
            Method::POST,
            "/Users",
            Some(
                json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                        "userName": "oauth.user"}),
            ),
        )
        .await;
    assert_eq!(created.0, StatusCode::CREATED, "{}", created.1);
    let id = created.1["id"].as_str().unwrap().to_string();
    let (s, got) = b
        .req_as(&basic, Method::GET, &format!("/Users/{id}"), None)
        .await;
    assert_eq!(
        (s, got["userName"].as_str()),
        (StatusCode::OK, Some("oauth.user"))
    );
    // The static token of the same tenant still works and sees the same user, at a (by id,
    // once replicated).
    eventually(30, "the user replicated to a", || async {
        let (s, v) = a.req(Method::GET, &format!("/Users/{id}"), None).await;
        (s == StatusCode::OK && v["userName"] == "oauth.user").then_some(())
    })
    .await;
    let b_token = access_token(token_basic(b, &c.id, &c.secret).await, 3600).await;
    let (s, _, _) = users_with(a, &b_token).await;
    assert_eq!(s, StatusCode::OK, "b's token at a");

    // Discovery lists client credentials next to the bearer scheme.
    let (_, spc) = b.req(Method::GET, "/ServiceProviderConfig", None).await;
    let types: Vec<&str> = spc["authenticationSchemes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["oauthbearertoken", "oauth2"], "{spc}");

    // Refused client credentials.
    let wrong = token_basic(a, &c.id, "gss_wrong").await;
    assert_eq!(
        oauth_error(wrong, StatusCode::UNAUTHORIZED).await,
        "invalid_client"
    );
    let unknown = token_form(a, "gsc_nobody", &c.secret).await;
    assert_eq!(
        oauth_error(unknown, StatusCode::UNAUTHORIZED).await,
        "invalid_client"
    );
    let r = a
        .client
        .post(format!("{}/oauth/token", a.url))
        .basic_auth(&c.id, Some(&c.secret))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("grant_type=password")
        .send()
        .await
        .unwrap();
    assert_eq!(
        oauth_error(r, StatusCode::BAD_REQUEST).await,
        "unsupported_grant_type"
    );
    let r = a
        .client
        .post(format!("{}/oauth/token", a.url))
        .basic_auth(&c.id, Some(&c.secret))
        .header("content-type", "application/json")
        .body("{\"grant_type\":\"client_credentials\"}")
        .send()
        .await
        .unwrap();
    assert_eq!(
        oauth_error(r, StatusCode::BAD_REQUEST).await,
        "invalid_request"
    );
    let r = a
        .client
        .get(format!("{}/oauth/token", a.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);

    // Refused access tokens at the SCIM API, each with its reason.
    let parts: Vec<&str> = basic.split('.').collect();
    // One character in the middle of the signature (the last one carries unused bits).
    let mut sig: Vec<char> = parts[2].chars().collect();
    sig[10] = if sig[10] == 'A' { 'B' } else { 'A' };
    let sig: String = sig.into_iter().collect();
    let tampered = format!("{}.{}.{sig}", parts[0], parts[1]);
    assert!(refused_token(b, &tampered).await.contains("signature"));
    let a_private = EncodingKey::from_ed_der(
        geoscim::oauth::SigningKey::load(&ka.file)
            .unwrap()
            .pkcs8_der(),
    );
    let mut forged = claims.clone();
    forged["aud"] = json!("https://another.api");
    let t = jsonwebtoken::encode(&header("oa-1"), &forged, &a_private).unwrap();
    assert!(refused_token(b, &t).await.contains("audience"));
    let mut forged = claims.clone();
    forged["iss"] = json!("https://another.issuer");
    let t = jsonwebtoken::encode(&header("oa-1"), &forged, &a_private).unwrap();
    assert!(refused_token(b, &t).await.contains("issuer"));
    let mut forged = claims.clone();
    forged["tenant"] = json!("t2");
    let t = jsonwebtoken::encode(&header("oa-1"), &forged, &a_private).unwrap();
    assert!(refused_token(b, &t).await.contains("client"));
    let stranger = geoscim::oauth::SigningKey::generate().unwrap();
    let stranger = EncodingKey::from_ed_der(stranger.pkcs8_der());
    let t = jsonwebtoken::encode(&header("zz-9"), &claims, &stranger).unwrap();
    assert!(refused_token(b, &t).await.contains("key"));
    let mut hs = header("oa-1");
    hs.alg = Algorithm::HS256;
    let t = jsonwebtoken::encode(&hs, &claims, &EncodingKey::from_secret(ka.x.as_bytes())).unwrap();
    assert!(refused_token(b, &t).await.contains("algorithm"));
    // A static token that is not known: still 401 with invalid_token.
    let (s, www, _) = users_with(b, "not-a-token").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(www.contains("invalid_token"), "{www}");

    // Counted by reason.
    let metrics = b.metrics().await;
    for series in [
        "geoscim_oauth_tokens_issued_total 1",
        "geoscim_oauth_access_tokens_refused_total{reason=\"bad_signature\"} 1",
        "geoscim_oauth_access_tokens_refused_total{reason=\"wrong_audience\"} 1",
        "geoscim_oauth_access_tokens_refused_total{reason=\"unknown_key\"} 1",
    ] {
        assert!(metrics.contains(series), "{series} in\n{metrics}");
    }

    // Rotation at a: both secrets while the second one is added…
    let (secret2, hash2) = rotate(&c);
    set_oauth(
        &cluster,
        "oa",
        &oauth_toml(&ka, &[&ka, &kb], &[(&c.id, "t1", &[hash, &hash2])], ""),
    );
    let a = regions.remove(0).restart();
    access_token(token_basic(&a, &c.id, &c.secret).await, 3600).await;
    let t2 = access_token(token_form(&a, &c.id, &secret2).await, 3600).await;
    let (s, _, _) = users_with(&regions[0], &t2).await;
    assert_eq!(
        s,
        StatusCode::OK,
        "a token got with the new secret works at b"
    );
    // …then the old one removed: refused, the new one still works.
    set_oauth(
        &cluster,
        "oa",
        &oauth_toml(&ka, &[&ka, &kb], &[(&c.id, "t1", &[&hash2])], ""),
    );
    let a = a.restart();
    let old = token_basic(&a, &c.id, &c.secret).await;
    assert_eq!(
        oauth_error(old, StatusCode::UNAUTHORIZED).await,
        "invalid_client"
    );
    let t3 = access_token(token_basic(&a, &c.id, &secret2).await, 3600).await;
    let (s, _, _) = users_with(&a, &t3).await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn an_expired_token_is_refused_and_a_static_token_still_works() {
    let dir = tempfile::tempdir().unwrap();
    let key = signing_key(dir.path(), "solo-1");
    let c = client("t1");
    // The whole table as environment overrides, as an operator could set it.
    let env = [
        ("GEOSCIM_OAUTH__ISSUER", ISSUER.to_string()),
        ("GEOSCIM_OAUTH__AUDIENCE", AUDIENCE.to_string()),
        ("GEOSCIM_OAUTH__TOKEN_LIFETIME_SECS", "3".to_string()),
        ("GEOSCIM_OAUTH__LEEWAY_SECS", "0".to_string()),
        (
            "GEOSCIM_OAUTH__SIGNING_KEY",
            format!("{{kid=\"{}\", file=\"{}\"}}", key.kid, key.file.display()),
        ),
        (
            "GEOSCIM_OAUTH__KEYS",
            format!("[{{kid=\"{}\", x=\"{}\"}}]", key.kid, key.x),
        ),
        (
            "GEOSCIM_OAUTH__CLIENTS",
            format!(
                "[{{client_id=\"{}\", tenant=\"t1\", secret_sha256=[\"{}\"]}}]",
                c.id, c.hash
            ),
        ),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(a, b)| (*a, b.as_str())).collect();
    let region = Region::start_with(&["t1"], &env);

    let token = access_token(token_basic(&region, &c.id, &c.secret).await, 3).await;
    let issued = Instant::now();
    let (s, _, body) = users_with(&region, &token).await;
    assert_eq!(s, StatusCode::OK, "valid right after it was issued: {body}");
    // Expired within its 3 s lifetime (plus a second of `iat` rounding): poll, bounded.
    let detail = loop {
        let (s, _, _) = users_with(&region, &token).await;
        if s == StatusCode::UNAUTHORIZED {
            break refused_token(&region, &token).await;
        }
        assert!(
            issued.elapsed() < Duration::from_secs(15),
            "the token was still accepted 15 s after it was issued"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(detail.contains("expired"), "{detail}");
    assert!(
        issued.elapsed() >= Duration::from_secs(1),
        "not refused early"
    );
    // The static token of the same tenant works as before.
    let (s, v) = region.req(Method::GET, "/Users", None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
}
