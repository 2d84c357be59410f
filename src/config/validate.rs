//! `Config::validate`: the rules that types alone cannot express, and the range of every
//! numeric key, each error naming its key.

use super::*;

impl Config {
    /// Check the rules that types alone cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, rule: &str| {
            Err(ConfigError::Invalid {
                key,
                rule: rule.to_string(),
            })
        };
        if !crate::ids::is_valid_name(&self.region) {
            return invalid("region", "must be 1-63 characters of a-z, 0-9, '-' and '_'");
        }
        if self.data_dir.as_os_str().is_empty() {
            return invalid("data_dir", "must not be empty");
        }
        if let Some(url) = &self.public_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) || url.ends_with('/') {
                return invalid(
                    "public_url",
                    "must be an absolute http(s) URL without a trailing '/'",
                );
            }
        }
        if self.http.max_body_bytes < 1024 {
            return invalid("http.max_body_bytes", "must be at least 1024");
        }
        if self.http.max_in_flight == 0 {
            return invalid("http.max_in_flight", "must be at least 1");
        }
        for (key, ms) in [
            (
                "http.header_read_timeout_ms",
                self.http.header_read_timeout_ms,
            ),
            ("http.body_read_timeout_ms", self.http.body_read_timeout_ms),
            ("http.request_timeout_ms", self.http.request_timeout_ms),
        ] {
            if !(100..=600_000).contains(&ms) {
                return invalid(key, "must be between 100 and 600000 (ms)");
            }
        }
        if self.http.max_connections < self.http.max_in_flight {
            return invalid(
                "http.max_connections",
                "must be at least http.max_in_flight (each request needs a connection)",
            );
        }
        if !(1..=3600).contains(&self.http.retry_after_secs) {
            return invalid("http.retry_after_secs", "must be between 1 and 3600");
        }
        if let Some(tls) = &self.http.tls {
            tls.validate()?;
        }
        tls::validate_peer_ca(self.http.peer_ca.as_deref())?;
        if self.scim.max_filter_len == 0 || self.scim.max_filter_depth == 0 {
            return invalid(
                "scim.max_filter_len",
                "filter limits (max_filter_len, max_filter_depth) must be at least 1",
            );
        }
        if self.scim.max_page_size == 0 {
            return invalid("scim.max_page_size", "must be at least 1");
        }
        if self.scim.default_page_size > self.scim.max_page_size {
            return invalid(
                "scim.default_page_size",
                "must not exceed scim.max_page_size",
            );
        }
        if self.scim.max_patch_ops == 0 {
            return invalid("scim.max_patch_ops", "must be at least 1");
        }
        if !(1..=100_000).contains(&self.scim.max_members_per_page) {
            return invalid("scim.max_members_per_page", "must be between 1 and 100000");
        }
        if self.scim.write_response_members > self.scim.max_members_per_page {
            return invalid(
                "scim.write_response_members",
                "must not exceed scim.max_members_per_page",
            );
        }
        if !(1..=86_400).contains(&self.scim.cursor_timeout_secs) {
            return invalid(
                "scim.cursor_timeout_secs",
                "must be between 1 and 86400 (s)",
            );
        }
        if let Some(k) = &self.scim.cursor_key {
            if k.len() < 32 || k.len() % 2 != 0 || !k.bytes().all(|b| b.is_ascii_hexdigit()) {
                return invalid(
                    "scim.cursor_key",
                    "must be an even number (at least 32) of hex digits",
                );
            }
        }
        if !(1..=10_000).contains(&self.scim.bulk_max_operations) {
            return invalid("scim.bulk_max_operations", "must be between 1 and 10000");
        }
        if !(1024..=64 << 20).contains(&self.scim.bulk_max_payload_bytes) {
            return invalid(
                "scim.bulk_max_payload_bytes",
                "must be between 1024 and 67108864 (64 MiB)",
            );
        }
        if self.storage.doc_cache_size == 0 {
            return invalid("storage.doc_cache_size", "must be at least 1");
        }
        if let Some(r) = &self.replication {
            // Peers found by DNS are not known here: the quorum is then checked at runtime.
            if r.write_quorum == 0 || (r.peers_srv.is_none() && r.write_quorum > r.peers.len() + 1)
            {
                return invalid(
                    "replication.write_quorum",
                    "must be between 1 and the number of regions (peers + this one)",
                );
            }
            if r.digest_interval_ms != 0 && r.digest_interval_ms < MIN_DIGEST_INTERVAL_MS {
                return invalid(
                    "replication.digest_interval_ms",
                    &format!("must be 0 (no digests) or at least {MIN_DIGEST_INTERVAL_MS}"),
                );
            }
            // Half the replication wire's largest frame (16 MiB), so a chunk always fits.
            if !(4096..=8 << 20).contains(&r.snapshot_chunk_bytes) {
                return invalid(
                    "replication.snapshot_chunk_bytes",
                    "must be between 4096 and 8388608 (half the largest frame)",
                );
            }
            if r.snapshot_window == 0 || r.snapshot_window > 64 {
                return invalid("replication.snapshot_window", "must be between 1 and 64");
            }
            if r.log_max_entries != 0 && r.log_max_entries <= r.log_keep_entries {
                return invalid(
                    "replication.log_max_entries",
                    "must be 0 (no limit) or more than replication.log_keep_entries",
                );
            }
            for peer in &r.peers {
                if !crate::ids::is_valid_name(&peer.region) || peer.region == self.region {
                    return invalid(
                        "replication.peers.region",
                        "must be a valid region name other than this region's",
                    );
                }
            }
        }
        if let Some(r) = &self.replication {
            if let Some(name) = &r.peers_srv {
                if !is_dns_name(
                    name.trim_end_matches('.')
                        .trim_start_matches('_')
                        .replace("._", ".")
                        .as_str(),
                ) {
                    return invalid(
                        "replication.peers_srv",
                        "must be a DNS name such as _geoscim._udp.<zone>",
                    );
                }
                if r.peers_srv_servers.is_empty() {
                    return invalid(
                        "replication.peers_srv_servers",
                        "must name at least one DNS server when replication.peers_srv is set",
                    );
                }
                if r.peers_srv_refresh_ms < 100 {
                    return invalid("replication.peers_srv_refresh_ms", "must be at least 100");
                }
            }
        }
        self.check_ranges()?;
        if let Some(d) = &self.dns {
            d.validate(&self.region)?;
        }
        self.dashboard.validate()?;
        if let Some(o) = &self.oauth {
            o.validate()?;
        }
        for token in &self.tokens {
            if !crate::ids::is_valid_name(&token.tenant) {
                return invalid(
                    "tokens.tenant",
                    "must be 1-63 characters of a-z, 0-9, '-' and '_'",
                );
            }
            if !is_sha256_hex(&token.sha256) {
                return invalid("tokens.sha256", "must be 64 hex digits (a SHA-256)");
            }
        }
        for token in &self.admin_tokens {
            if !is_sha256_hex(&token.sha256) {
                return invalid("admin_tokens.sha256", "must be 64 hex digits (a SHA-256)");
            }
        }
        if let Some(name) = self.tenants.keys().find(|t| !crate::ids::is_valid_name(t)) {
            return invalid(
                "tenants",
                &format!("tenant {name:?}: must be 1-63 characters of a-z, 0-9, '-' and '_'"),
            );
        }
        for (name, tenant) in &self.tenants {
            if let Err(rule) = check_sticky(&tenant.sticky) {
                return invalid("tenants.<name>.sticky", &format!("tenant {name:?}: {rule}"));
            }
            if let Some(events) = &tenant.events {
                if let Err(rule) = events.check() {
                    return invalid("tenants.<name>.events", &format!("tenant {name:?}: {rule}"));
                }
                if self.oauth.is_none() {
                    return invalid(
                        "tenants.<name>.events",
                        &format!(
                            "tenant {name:?}: events are signed with the region's OAuth \
                             signing key: configure [oauth] (see README, \"SCIM events\")"
                        ),
                    );
                }
            }
        }
        Ok(())
    }
}

impl Config {
    /// The range of every numeric key not checked with a rule of its own above: a typo of a
    /// few zeros (a timeout of 0 or of days, a cache of a billion documents) stops the region
    /// at start instead of misbehaving under load.
    fn check_ranges(&self) -> Result<(), ConfigError> {
        const DAY_MS: u64 = 86_400_000;
        let n = |v: usize| v as u64;
        let (h, sc, st) = (&self.http, &self.scim, &self.storage);
        let mut ranges: Vec<(&'static str, u64, u64, u64)> = vec![
            ("http.max_body_bytes", n(h.max_body_bytes), 1024, 64 << 20),
            ("http.max_in_flight", n(h.max_in_flight), 1, 100_000),
            ("http.max_connections", n(h.max_connections), 1, 1_000_000),
            ("scim.max_filter_len", n(sc.max_filter_len), 1, 1 << 20),
            ("scim.max_filter_depth", n(sc.max_filter_depth), 1, 1000),
            (
                "scim.default_page_size",
                n(sc.default_page_size),
                1,
                100_000,
            ),
            ("scim.max_page_size", n(sc.max_page_size), 1, 100_000),
            ("scim.max_patch_ops", n(sc.max_patch_ops), 1, 100_000),
            (
                "storage.doc_cache_size",
                n(st.doc_cache_size),
                1,
                10_000_000,
            ),
            (
                "storage.member_history_entries",
                n(st.member_history_entries),
                0,
                1_000_000,
            ),
        ];
        ranges.extend(self.events.ranges());
        if self.events.push_backoff_max_ms < self.events.push_backoff_ms {
            return Err(ConfigError::Invalid {
                key: "events.push_backoff_max_ms",
                rule: "must be at least events.push_backoff_ms".into(),
            });
        }
        if self.events.poll_wait_ms >= self.http.request_timeout_ms {
            return Err(ConfigError::Invalid {
                key: "events.poll_wait_ms",
                rule: "must be below http.request_timeout_ms (a waiting poll would time out)"
                    .into(),
            });
        }
        // Keys where 0 turns the feature off.
        let mut off_or: Vec<(&'static str, u64, u64, u64)> = Vec::new();
        if let Some(r) = &self.replication {
            ranges.extend([
                (
                    "replication.quorum_timeout_ms",
                    r.quorum_timeout_ms,
                    10,
                    600_000,
                ),
                (
                    "replication.lookup_timeout_ms",
                    r.lookup_timeout_ms,
                    10,
                    60_000,
                ),
                (
                    "replication.log_keep_entries",
                    r.log_keep_entries,
                    0,
                    100_000_000,
                ),
                ("replication.start_hold_ms", r.start_hold_ms, 0, 600_000),
                (
                    "replication.peers_srv_refresh_ms",
                    r.peers_srv_refresh_ms,
                    100,
                    DAY_MS,
                ),
            ]);
            off_or.extend([
                (
                    "replication.digest_interval_ms",
                    r.digest_interval_ms,
                    MIN_DIGEST_INTERVAL_MS,
                    DAY_MS,
                ),
                (
                    "replication.tombstone_gc_interval_ms",
                    r.tombstone_gc_interval_ms,
                    100,
                    DAY_MS,
                ),
                (
                    "replication.membership_gc_interval_ms",
                    r.membership_gc_interval_ms,
                    100,
                    DAY_MS,
                ),
                (
                    "replication.truncate_interval_ms",
                    r.truncate_interval_ms,
                    100,
                    DAY_MS,
                ),
                (
                    "replication.log_max_entries",
                    r.log_max_entries,
                    1,
                    10_000_000_000,
                ),
            ]);
        }
        for (key, value, lo, hi) in ranges {
            if !(lo..=hi).contains(&value) {
                return Err(ConfigError::Invalid {
                    key,
                    rule: format!("must be between {lo} and {hi} (is {value})"),
                });
            }
        }
        for (key, value, lo, hi) in off_or {
            if value != 0 && !(lo..=hi).contains(&value) {
                return Err(ConfigError::Invalid {
                    key,
                    rule: format!("must be 0 (off) or between {lo} and {hi} (is {value})"),
                });
            }
        }
        Ok(())
    }
}

/// The shape of a tenant's sticky attributes (their names are checked against the schema at
/// start, where the schema is known).
fn check_sticky(sticky: &[StickyConfig]) -> Result<(), String> {
    if sticky.len() > MAX_STICKY_ATTRIBUTES {
        return Err(format!("at most {MAX_STICKY_ATTRIBUTES} sticky attributes"));
    }
    for (i, s) in sticky.iter().enumerate() {
        if s.attribute.trim().is_empty() {
            return Err(format!("sticky[{i}].attribute must not be empty"));
        }
        if s.attribute.eq_ignore_ascii_case("active") {
            return Err(format!(
                "sticky[{i}]: `active` is always sticky (false restricts); name another attribute"
            ));
        }
        if sticky[..i]
            .iter()
            .any(|o| o.attribute.eq_ignore_ascii_case(&s.attribute))
        {
            return Err(format!("sticky[{i}]: {:?} is named twice", s.attribute));
        }
        if s.restrictive.is_empty() {
            return Err(format!(
                "sticky[{i}].restrictive must name at least one value"
            ));
        }
        if let Some(v) = s.restrictive.iter().find(|v| {
            !matches!(
                v,
                serde_json::Value::String(_)
                    | serde_json::Value::Bool(_)
                    | serde_json::Value::Number(_)
            )
        }) {
            return Err(format!(
                "sticky[{i}].restrictive: {v} is not a string, boolean or number"
            ));
        }
    }
    Ok(())
}

/// Is `s` a SHA-256 in hex (either case)?
pub(super) fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}
