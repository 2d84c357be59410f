//! Data source `geoscim_user`: one user as a given region reads it (`userName eq` filter over
//! the SCIM API), to assert that an acknowledged write is readable in the regions that survive.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tf_provider::schema::{AttributeConstraint as C, AttributeType as T, Schema};
use tf_provider::value::{Value, ValueEmpty};
use tf_provider::{DataSource, Diagnostics};

use crate::schema::{attr, error_at, schema, secret};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct UserState {
    pub url: Value<String>,
    pub token: Value<String>,
    pub user_name: Value<String>,
    pub wait_ms: Value<i64>,
    pub found: Value<bool>,
    pub id: Value<String>,
    pub active: Value<bool>,
    pub json: Value<String>,
}

/// The `userName eq "<name>"` filter, URL-encoded (a quote or backslash in the name escaped
/// as a SCIM string).
pub fn filter_query(user_name: &str) -> String {
    let escaped = user_name.replace('\\', "\\\\").replace('"', "\\\"");
    let filter = format!("userName eq \"{escaped}\"");
    form_urlencoded::Serializer::new(String::new())
        .append_pair("filter", &filter)
        .finish()
}

#[derive(Debug, Default, Clone, Copy)]
pub struct UserDataSource;

#[async_trait]
impl DataSource for UserDataSource {
    type State<'a> = UserState;
    type ProviderMetaState<'a> = ValueEmpty;

    fn schema(&self, _diags: &mut Diagnostics) -> Option<Schema> {
        Some(schema(
            "A user as read from one region (SCIM userName filter).",
            vec![
                (
                    "url",
                    attr(
                        T::String,
                        C::Required,
                        "the region's base URL (geoscim_region.<name>.http_url)",
                    ),
                ),
                (
                    "token",
                    secret(
                        T::String,
                        C::Required,
                        "a tenant token (geoscim_token.<name>.token)",
                    ),
                ),
                (
                    "user_name",
                    attr(T::String, C::Required, "the userName to find"),
                ),
                (
                    "wait_ms",
                    attr(
                        T::Number,
                        C::Optional,
                        "poll this long for the user to appear (default 0: one read)",
                    ),
                ),
                (
                    "found",
                    attr(T::Bool, C::Computed, "the region has the user"),
                ),
                (
                    "id",
                    attr(T::String, C::Computed, "its id (empty if not found)"),
                ),
                ("active", attr(T::Bool, C::Computed, "its active flag")),
                (
                    "json",
                    attr(
                        T::String,
                        C::Computed,
                        "the resource as the region answered it",
                    ),
                ),
            ],
        ))
    }

    async fn read<'a>(
        &self,
        diags: &mut Diagnostics,
        config: Self::State<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<Self::State<'a>> {
        let mut state = config;
        let url = state.url.as_ref_option().cloned().unwrap_or_default();
        let token = state.token.as_ref_option().cloned().unwrap_or_default();
        let name = state.user_name.as_ref_option().cloned().unwrap_or_default();
        let wait = Duration::from_millis(
            state.wait_ms.as_ref_option().copied().unwrap_or(0).max(0) as u64,
        );
        let client = crate::probe::client(Duration::from_secs(3));
        let target = format!(
            "{}/scim/v2/Users?{}",
            url.trim_end_matches('/'),
            filter_query(&name)
        );
        let start = Instant::now();
        let user = loop {
            let answer = client.get(&target).bearer_auth(&token).send().await;
            let found = match answer {
                Ok(r) if r.status().is_success() => r
                    .json::<serde_json::Value>()
                    .await
                    .ok()
                    .and_then(|v| v["Resources"].as_array().and_then(|a| a.first().cloned())),
                Ok(r) if r.status().as_u16() == 401 => {
                    error_at(
                        diags,
                        "token",
                        "token refused",
                        format!("{url} answered 401: use a tenant token the regions accept"),
                    );
                    return None;
                }
                _ => None,
            };
            if found.is_some() || start.elapsed() >= wait {
                break found;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        state.found = Value::Value(user.is_some());
        state.id = Value::Value(
            user.as_ref()
                .and_then(|u| u["id"].as_str())
                .unwrap_or_default()
                .to_string(),
        );
        state.active = Value::Value(
            user.as_ref()
                .and_then(|u| u["active"].as_bool())
                .unwrap_or(false),
        );
        state.json = Value::Value(user.map(|u| u.to_string()).unwrap_or_default());
        Some(state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filter_quotes_the_name() {
        assert_eq!(filter_query("bjensen"), "filter=userName+eq+%22bjensen%22");
        assert_eq!(filter_query("a\"b"), "filter=userName+eq+%22a%5C%22b%22");
    }
}
