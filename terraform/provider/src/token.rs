//! `geoscim_token`: a bearer token for one tenant (or an admin token). The token itself is a
//! sensitive output kept only in the Terraform state; regions get its SHA-256 (`sha256`), as
//! `geoscim token create` prints it.

use async_trait::async_trait;
use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tf_provider::schema::{AttributeConstraint as C, AttributeType as T, Schema};
use tf_provider::value::{Value, ValueEmpty};
use tf_provider::{AttributePath, Diagnostics, Resource};

use crate::regionconf::is_valid_name;
use crate::schema::{attr, error_at, schema, secret};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct TokenState {
    pub id: Value<String>,
    pub tenant: Value<String>,
    pub admin: Value<bool>,
    pub token: Value<String>,
    pub sha256: Value<String>,
}

/// A new token in geoscim's format: `gs_` + 32 random bytes, base64url.
pub fn new_token() -> String {
    let bytes: [u8; 32] = rand::random();
    format!(
        "gs_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// The hash a region file holds for `token` (hex SHA-256, as the regions compare it).
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

#[derive(Debug, Default, Clone, Copy)]
pub struct TokenResource;

#[async_trait]
impl Resource for TokenResource {
    type State<'a> = TokenState;
    type PrivateState<'a> = ValueEmpty;
    type ProviderMetaState<'a> = ValueEmpty;

    fn schema(&self, _diags: &mut Diagnostics) -> Option<Schema> {
        Some(schema(
            "A tenant bearer token (or an admin token). Only its sha256 goes into region files.",
            vec![
                (
                    "id",
                    attr(T::String, C::Computed, "the first 12 characters of sha256"),
                ),
                (
                    "tenant",
                    attr(
                        T::String,
                        C::Optional,
                        "the tenant it acts for (required unless admin)",
                    ),
                ),
                (
                    "admin",
                    attr(
                        T::Bool,
                        C::OptionalComputed,
                        "an admin token for /admin/v1 (default false)",
                    ),
                ),
                ("token", secret(T::String, C::Computed, "the bearer token")),
                (
                    "sha256",
                    attr(
                        T::String,
                        C::Computed,
                        "hex SHA-256 of the token, for geoscim_region.tokens",
                    ),
                ),
            ],
        ))
    }

    async fn validate<'a>(&self, diags: &mut Diagnostics, config: Self::State<'a>) -> Option<()> {
        let admin = config.admin.as_ref_option().copied().unwrap_or(false);
        match (&config.tenant, admin) {
            (Value::Null, false) => {
                error_at(
                    diags,
                    "tenant",
                    "tenant missing",
                    "a tenant token needs tenant = \"...\" (or set admin = true)".into(),
                );
                None
            }
            (Value::Value(t), true) => {
                error_at(
                    diags,
                    "tenant",
                    "tenant with admin",
                    format!("an admin token belongs to no tenant: drop tenant = {t:?} or admin"),
                );
                None
            }
            (Value::Value(t), false) if !is_valid_name(t) => {
                error_at(
                    diags,
                    "tenant",
                    "invalid tenant",
                    format!("{t:?} must be 1-63 characters of a-z, 0-9, '-' and '_'"),
                );
                None
            }
            _ => Some(()),
        }
    }

    async fn read<'a>(
        &self,
        _diags: &mut Diagnostics,
        state: Self::State<'a>,
        private: Self::PrivateState<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<(Self::State<'a>, Self::PrivateState<'a>)> {
        Some((state, private))
    }

    async fn plan_create<'a>(
        &self,
        _diags: &mut Diagnostics,
        proposed: Self::State<'a>,
        _config: Self::State<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<(Self::State<'a>, Self::PrivateState<'a>)> {
        let mut state = proposed;
        if state.admin.is_null() {
            state.admin = Value::Value(false);
        }
        state.id = Value::Unknown;
        state.token = Value::Unknown;
        state.sha256 = Value::Unknown;
        Some((state, Default::default()))
    }

    async fn plan_update<'a>(
        &self,
        _diags: &mut Diagnostics,
        prior: Self::State<'a>,
        proposed: Self::State<'a>,
        _config: Self::State<'a>,
        private: Self::PrivateState<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<(Self::State<'a>, Self::PrivateState<'a>, Vec<AttributePath>)> {
        let mut state = proposed;
        if state.admin.is_null() {
            state.admin = Value::Value(false);
        }
        let mut replace = vec![];
        if state.tenant != prior.tenant {
            replace.push(AttributePath::new("tenant"));
        }
        if state.admin != prior.admin {
            replace.push(AttributePath::new("admin"));
        }
        if replace.is_empty() {
            state.id = prior.id;
            state.token = prior.token;
            state.sha256 = prior.sha256;
        } else {
            state.id = Value::Unknown;
            state.token = Value::Unknown;
            state.sha256 = Value::Unknown;
        }
        Some((state, private, replace))
    }

    async fn plan_destroy<'a>(
        &self,
        _diags: &mut Diagnostics,
        _prior: Self::State<'a>,
        private: Self::PrivateState<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<Self::PrivateState<'a>> {
        Some(private)
    }

    async fn create<'a>(
        &self,
        _diags: &mut Diagnostics,
        planned: Self::State<'a>,
        _config: Self::State<'a>,
        private: Self::PrivateState<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<(Self::State<'a>, Self::PrivateState<'a>)> {
        let mut state = planned;
        let token = new_token();
        let hash = token_hash(&token);
        state.id = Value::Value(hash[..12].to_string());
        state.sha256 = Value::Value(hash);
        state.token = Value::Value(token);
        Some((state, private))
    }

    async fn update<'a>(
        &self,
        _diags: &mut Diagnostics,
        _prior: Self::State<'a>,
        planned: Self::State<'a>,
        _config: Self::State<'a>,
        private: Self::PrivateState<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<(Self::State<'a>, Self::PrivateState<'a>)> {
        Some((planned, private))
    }

    async fn destroy<'a>(
        &self,
        _diags: &mut Diagnostics,
        _state: Self::State<'a>,
        _private: Self::PrivateState<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<()> {
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_created_token_matches_its_hash_and_is_never_reused() {
        let mut d = Diagnostics::default();
        let planned = TokenState {
            tenant: Value::Value("acme".into()),
            ..Default::default()
        };
        let (planned, _) = TokenResource
            .plan_create(&mut d, planned, Default::default(), Default::default())
            .await
            .unwrap();
        assert!(planned.token.is_unknown() && planned.sha256.is_unknown());
        let (a, _) = TokenResource
            .create(
                &mut d,
                planned.clone(),
                Default::default(),
                Default::default(),
                Default::default(),
            )
            .await
            .unwrap();
        let (b, _) = TokenResource
            .create(
                &mut d,
                planned,
                Default::default(),
                Default::default(),
                Default::default(),
            )
            .await
            .unwrap();
        let token = a.token.as_ref_option().unwrap();
        assert!(token.starts_with("gs_") && token.len() > 40);
        assert_eq!(a.sha256.as_ref_option().unwrap(), &token_hash(token));
        assert_ne!(a.token, b.token);
    }

    #[tokio::test]
    async fn a_tenant_is_required_unless_admin_and_changing_it_replaces() {
        let mut d = Diagnostics::default();
        assert!(TokenResource
            .validate(&mut d, TokenState::default())
            .await
            .is_none());
        let admin = TokenState {
            admin: Value::Value(true),
            ..Default::default()
        };
        assert!(TokenResource
            .validate(&mut Diagnostics::default(), admin)
            .await
            .is_some());
        let prior = TokenState {
            tenant: Value::Value("a".into()),
            admin: Value::Value(false),
            token: Value::Value("gs_x".into()),
            ..Default::default()
        };
        let proposed = TokenState {
            tenant: Value::Value("b".into()),
            ..prior.clone()
        };
        let (_, _, replace) = TokenResource
            .plan_update(
                &mut d,
                prior,
                proposed,
                Default::default(),
                Default::default(),
                Default::default(),
            )
            .await
            .unwrap();
        assert_eq!(replace, vec![AttributePath::new("tenant")]);
    }
}
