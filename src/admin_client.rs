//! The client side of the admin API, for `geoscim conflicts`: one HTTP call, and the table it
//! prints (a pure function, tested on its own).

use std::time::Duration;

use serde_json::Value;

use crate::conflict::Conflict;

/// Errors reading the admin API.
#[derive(Debug, thiserror::Error)]
pub enum AdminClientError {
    /// The region could not be reached, or its answer could not be read.
    #[error("cannot reach {url}: {source}")]
    Http { url: String, source: reqwest::Error },
    /// The region answered with an error (its SCIM error `detail`).
    #[error("{url} answered {status}: {detail}")]
    Status {
        url: String,
        status: u16,
        detail: String,
    },
    /// The answer is not the admin API's JSON.
    #[error("unexpected answer from {url}: {message}")]
    Body { url: String, message: String },
    /// The `--cacert` file cannot be used.
    #[error(transparent)]
    Ca(#[from] crate::tls::client::CaError),
}

/// The filters and paging of `GET /admin/v1/conflicts`; `None` leaves a parameter out. Also
/// the flags of `geoscim conflicts`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ConflictFilter {
    /// Only this tenant's conflicts.
    #[arg(long)]
    pub tenant: Option<String>,
    /// Only this rule: sticky-deactivation, delete-wins, username-merge,
    /// membership-remove-wins or concurrent-scalar.
    #[arg(long)]
    pub rule: Option<String>,
    /// Only conflicts of this resource id.
    #[arg(long)]
    pub resource: Option<String>,
    /// Only conflicts at or after this RFC 3339 time.
    #[arg(long)]
    pub since: Option<String>,
    /// Only conflicts before this RFC 3339 time.
    #[arg(long)]
    pub until: Option<String>,
    /// 1-based index of the first conflict shown.
    #[arg(long)]
    pub start_index: Option<usize>,
    /// At most this many conflicts (the region caps it at `scim.max_page_size`).
    #[arg(long)]
    pub count: Option<usize>,
}

impl ConflictFilter {
    /// The query string (without `?`).
    fn query(&self) -> String {
        let mut q = form_urlencoded::Serializer::new(String::new());
        let numbers = [("startIndex", self.start_index), ("count", self.count)];
        for (name, value) in [
            ("tenant", &self.tenant),
            ("rule", &self.rule),
            ("resource", &self.resource),
            ("since", &self.since),
            ("until", &self.until),
        ] {
            if let Some(v) = value {
                q.append_pair(name, v);
            }
        }
        for (name, value) in numbers {
            if let Some(v) = value {
                q.append_pair(name, &v.to_string());
            }
        }
        q.finish()
    }
}

/// `GET {base}/admin/v1/conflicts?…` with an admin token: the page as JSON.
pub async fn fetch_conflicts(
    base: &str,
    token: &str,
    filter: &ConflictFilter,
    cacert: Option<&std::path::Path>,
) -> Result<Value, AdminClientError> {
    let mut url = format!("{}/admin/v1/conflicts", base.trim_end_matches('/'));
    let query = filter.query();
    if !query.is_empty() {
        url = format!("{url}?{query}");
    }
    let http = |source| AdminClientError::Http {
        url: url.clone(),
        source,
    };
    let roots = match cacert {
        Some(path) => crate::tls::client::read_ca_file(path, "--cacert")?,
        None => Vec::new(),
    };
    let client = crate::tls::client::trusting(reqwest::Client::builder(), &roots)
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(http)?;
    let response = client
        .get(&url)
        .bearer_auth(token)
        .send()
        .await
        .map_err(http)?;
    let status = response.status();
    let text = response.text().await.map_err(http)?;
    let body: Option<Value> = serde_json::from_str(&text).ok();
    if !status.is_success() {
        let detail = body
            .as_ref()
            .and_then(|b| b["detail"].as_str())
            .map(str::to_string)
            .unwrap_or(text);
        return Err(AdminClientError::Status {
            url,
            status: status.as_u16(),
            detail,
        });
    }
    body.ok_or_else(|| AdminClientError::Body {
        url,
        message: "not JSON".into(),
    })
}

/// The conflicts of a page (`Resources`).
pub fn page_conflicts(page: &Value) -> Result<Vec<Conflict>, String> {
    serde_json::from_value(page["Resources"].clone()).map_err(|e| format!("Resources: {e}"))
}

/// A page of conflicts as a text table, one conflict per line, and a last line saying which of
/// how many these are. Values are JSON (so `"false"` and `false` differ), long ones shortened.
pub fn conflicts_table(page: &Value) -> Result<String, String> {
    let conflicts = page_conflicts(page)?;
    let total = page["totalResults"].as_u64().unwrap_or(0);
    let start = page["startIndex"].as_u64().unwrap_or(1);
    let mut rows: Vec<[String; 8]> = vec![[
        "ID",
        "AT",
        "TENANT",
        "RESOURCE",
        "ATTRIBUTE",
        "RULE",
        "OUTCOME",
        "VALUES",
    ]
    .map(str::to_string)];
    for c in &conflicts {
        let values: Vec<String> = c
            .values
            .iter()
            .map(|v| format!("{}={}", v.region, short(&v.value)))
            .collect();
        rows.push([
            c.id.chars().take(8).collect(),
            c.at.clone(),
            c.tenant.clone(),
            format!("{}/{}", c.resource_type, c.resource_id),
            c.attribute.clone(),
            c.rule.as_str().to_string(),
            short(&c.outcome),
            values.join(" "),
        ]);
    }
    let mut widths = [0usize; 8];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    if conflicts.is_empty() {
        out.push_str("no conflicts\n");
    } else {
        for row in &rows {
            let line: Vec<String> = row
                .iter()
                .zip(widths)
                .map(|(cell, w)| format!("{cell:<w$}"))
                .collect();
            out.push_str(line.join("  ").trim_end());
            out.push('\n');
        }
    }
    let shown = conflicts.len() as u64;
    if shown > 0 {
        out.push_str(&format!(
            "{}-{} of {total} conflicts\n",
            start,
            start + shown - 1
        ));
    } else {
        out.push_str(&format!("0 of {total} conflicts\n"));
    }
    Ok(out)
}

/// A value as compact JSON, at most 40 characters.
fn short(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() <= 40 {
        return text;
    }
    let mut s: String = text.chars().take(39).collect();
    s.push('…');
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn table_has_one_line_per_conflict_with_values_by_region() {
        let page = json!({
            "totalResults": 3, "startIndex": 2, "itemsPerPage": 1,
            "Resources": [{
                "id": "0123456789abcdef", "tenant": "acme", "resourceType": "User",
                "resourceId": "u1", "attribute": "active", "rule": "sticky-deactivation",
                "values": [
                    {"value": false, "region": "eu", "at": "2025-01-31T12:00:00Z"},
                    {"value": true, "region": "us", "at": "2025-01-31T12:00:01Z"}
                ],
                "outcome": false, "at": "2025-01-31T12:00:01Z"
            }]
        });
        let table = conflicts_table(&page).unwrap();
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3, "{table}");
        assert!(lines[0].starts_with("ID "), "{table}");
        for part in [
            "01234567 ",
            "2025-01-31T12:00:01Z",
            "acme",
            "User/u1",
            "active",
            "sticky-deactivation",
            "eu=false us=true",
        ] {
            assert!(lines[1].contains(part), "{part} missing: {table}");
        }
        assert!(
            !lines[1].contains("89abcdef"),
            "the id is shortened: {table}"
        );
        assert_eq!(lines[2], "2-2 of 3 conflicts");
    }

    #[test]
    fn empty_pages_say_so_and_long_values_are_shortened() {
        let table = conflicts_table(&json!({"totalResults": 0, "Resources": []})).unwrap();
        assert_eq!(table, "no conflicts\n0 of 0 conflicts\n");
        assert_eq!(short(&json!("x".repeat(100))).chars().count(), 40);
        assert!(conflicts_table(&json!({"Resources": [{"id": 1}]})).is_err());
    }

    #[test]
    fn only_given_filters_are_sent() {
        let f = ConflictFilter {
            tenant: Some("a b".into()),
            rule: Some("delete-wins".into()),
            count: Some(5),
            ..ConflictFilter::default()
        };
        assert_eq!(f.query(), "tenant=a+b&rule=delete-wins&count=5");
        assert_eq!(ConflictFilter::default().query(), "");
    }
}
