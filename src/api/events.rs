//! `POST /scim/v2/Events`: the poll endpoint of a tenant's event feed (RFC 8936), behind the
//! tenant's bearer token like every SCIM request. The rules are in `crate::events::poll`.
//!
//! A poll first removes what it acknowledges (`ack`) or reports as refused (`setErrs`), then
//! answers the oldest pending SETs, at most `maxEvents`. Pending SETs stay pending until
//! acknowledged: a poll whose answer was lost gets the same SETs again (same `jti`). With
//! nothing pending and `returnImmediately: false`, it waits up to `events.poll_wait_ms` for
//! the next event to commit.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Extension;

use super::{blocking, ApiError, AppState, Tenant};
use crate::config::Delivery;
use crate::events::{poll, set};
use crate::scim::ScimError;
use crate::store::Event;

/// The compact SET of a feed event, signed by this region.
pub fn compact_set(state: &AppState, tenant: &str, event: &Event) -> Result<String, ScimError> {
    let oauth = state.oauth.as_ref().ok_or_else(|| {
        ScimError::Internal("events need [oauth] (its signing key signs them)".into())
    })?;
    let audience = state
        .config
        .tenants
        .get(tenant)
        .and_then(|t| t.events.as_ref())
        .map(|e| e.audience(tenant))
        .unwrap_or_else(|| tenant.to_string());
    let issuer = state
        .config
        .events
        .issuer
        .as_deref()
        .unwrap_or(oauth.issuer());
    let endpoint = if event.resource_type == "Group" {
        "Groups"
    } else {
        "Users"
    };
    set::sign(
        oauth.signer(),
        set::SetInput {
            issuer,
            audience: &audience,
            jti: &event.jti,
            endpoint,
            id: &event.id,
            intent: &event.intent,
            at_millis: event.at_millis,
        },
    )
    .map_err(|e| ScimError::Internal(format!("signing a SET failed: {e}")))
}

/// Answer one poll of the tenant's feed.
pub(super) async fn poll_events(
    State(state): State<Arc<AppState>>,
    Extension(Tenant(tenant)): Extension<Tenant>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let feed = state
        .config
        .tenants
        .get(&tenant)
        .and_then(|t| t.events.clone());
    match feed {
        None => {
            return Err(ScimError::NotFound(format!(
                "tenant {tenant:?} has no event feed ([tenants.{tenant}.events] is not configured)"
            ))
            .into())
        }
        Some(f) if f.delivery == Delivery::Push => {
            return Err(ScimError::NotFound(format!(
                "tenant {tenant:?}'s events are pushed to its receiver (events.delivery = \
                 \"push\"); there is no feed to poll"
            ))
            .into())
        }
        Some(_) => {}
    }
    let request = poll::parse(&body, state.config.events.poll_max_events)?;
    let labels = crate::api::metrics::EventMetrics::tenant(&tenant);
    if !request.ack.is_empty() || !request.set_errs.is_empty() {
        for (jti, err, description) in &request.set_errs {
            tracing::warn!(tenant = %tenant, jti = %jti, err = %err, description = %description,
                "the event receiver could not process a SET; it is not sent again");
        }
        let (t, ack) = (tenant.clone(), request.ack.clone());
        let errs: Vec<String> = request.set_errs.iter().map(|e| e.0.clone()).collect();
        let (acked, refused) = blocking(&state, move |store| {
            Ok((store.ack_events(&t, &ack)?, store.ack_events(&t, &errs)?))
        })
        .await?;
        state
            .metrics
            .events
            .acknowledged
            .get_or_create(&labels)
            .inc_by(acked as u64);
        state
            .metrics
            .events
            .refused
            .get_or_create(&labels)
            .inc_by(refused as u64);
    }
    // Subscribed before reading, so an event that commits between the read and the wait
    // still wakes the wait.
    let mut changes = state.store.event_changes();
    let wait = std::time::Duration::from_millis(state.config.events.poll_wait_ms);
    let deadline = tokio::time::Instant::now() + wait;
    let (events, more) = loop {
        let (t, max) = (tenant.clone(), request.max_events);
        let (events, more) = blocking(&state, move |store| {
            if max == 0 {
                let pending = store.pending_event_count(&t)?;
                return Ok((Vec::new(), pending > 0));
            }
            store.pending_events(&t, max)
        })
        .await?;
        if !events.is_empty() || request.return_immediately || request.max_events == 0 {
            break (events, more);
        }
        match tokio::time::timeout_at(deadline, changes.changed()).await {
            Ok(Ok(())) => continue,
            _ => break (events, more),
        }
    };
    let mut sets = Vec::with_capacity(events.len());
    for event in &events {
        sets.push((event.jti.clone(), compact_set(&state, &tenant, event)?));
    }
    let via = crate::api::metrics::DeliveryLabels {
        tenant: tenant.clone(),
        via: "poll".into(),
    };
    state
        .metrics
        .events
        .delivered
        .get_or_create(&via)
        .inc_by(sets.len() as u64);
    let body = poll::response(&sets, more);
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_vec(&body).unwrap_or_default(),
    )
        .into_response())
}
