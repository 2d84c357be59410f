//! The Security Event Token (RFC 8417) of one write, profiled by RFC 9967.
//!
//! One SET per write: its `events` claim holds the provisioning event (`prov:create:notice`,
//! `prov:put:notice`, `prov:patch:notice` with the changed `attributes`, or `prov:delete`) and,
//! when the write changed the user's access, `prov:deactivate` or `prov:activate` next to it
//! (RFC 9967 §2.1 lets one SET carry several events about one change of one subject). The
//! subject is `sub_id` of format `scim` with the resource's `uri` relative to the SCIM base.
//!
//! The claims are a function of the write alone: `jti` and `txn` are the write's
//! `origin.sequence`, `iat` its time at the origin. So every region issues the same claims for
//! the same write, and a SET delivered twice (a lost acknowledgement, a receiver that moves to
//! another region) is recognisably the same one.

use serde_json::{json, Map, Value};

use super::intent::{Access, Intent, Op};

/// The `typ` header of a SET (RFC 8417 §2.3).
pub const SET_TYPE: &str = "secevent+jwt";

/// The media type of a pushed SET (RFC 8935 §2).
pub const SET_MEDIA_TYPE: &str = "application/secevent+jwt";

/// The event URIs this server issues (advertised in `/ServiceProviderConfig`).
pub const EVENT_URIS: &[&str] = &[
    CREATE_NOTICE,
    PUT_NOTICE,
    PATCH_NOTICE,
    DELETE,
    ACTIVATE,
    DEACTIVATE,
];

pub const CREATE_NOTICE: &str = "urn:ietf:params:scim:event:prov:create:notice";
pub const PUT_NOTICE: &str = "urn:ietf:params:scim:event:prov:put:notice";
pub const PATCH_NOTICE: &str = "urn:ietf:params:scim:event:prov:patch:notice";
pub const DELETE: &str = "urn:ietf:params:scim:event:prov:delete";
pub const ACTIVATE: &str = "urn:ietf:params:scim:event:prov:activate";
pub const DEACTIVATE: &str = "urn:ietf:params:scim:event:prov:deactivate";

/// What a SET is made of.
#[derive(Debug, Clone, Copy)]
pub struct SetInput<'a> {
    /// `iss`: the cluster's issuer.
    pub issuer: &'a str,
    /// `aud`: the tenant's receiver.
    pub audience: &'a str,
    /// The write's `origin.sequence`.
    pub jti: &'a str,
    /// `Users` or `Groups`: the endpoint of the resource.
    pub endpoint: &'a str,
    pub id: &'a str,
    pub intent: &'a Intent,
    /// The write's time at its origin, milliseconds since the epoch.
    pub at_millis: i64,
}

/// The claims of the SET of one write.
pub fn claims(input: SetInput<'_>) -> Value {
    let intent = input.intent;
    let mut events = Map::new();
    let notice = |uri: &str, events: &mut Map<String, Value>| {
        events.insert(uri.into(), json!({ "attributes": intent.attributes }));
    };
    match intent.op {
        Some(Op::Create) => notice(CREATE_NOTICE, &mut events),
        Some(Op::Put) => notice(PUT_NOTICE, &mut events),
        Some(Op::Patch) | None => notice(PATCH_NOTICE, &mut events),
        Some(Op::Delete) => {
            events.insert(DELETE.into(), json!({}));
        }
    }
    match intent.access {
        Some(Access::Deactivate) => {
            events.insert(DEACTIVATE.into(), json!({}));
        }
        Some(Access::Activate) => {
            events.insert(ACTIVATE.into(), json!({}));
        }
        None => {}
    }
    json!({
        "iss": input.issuer,
        "aud": input.audience,
        "iat": input.at_millis.max(0) / 1000,
        "jti": input.jti,
        "txn": input.jti,
        "sub_id": {
            "format": "scim",
            "uri": format!("/{}/{}", input.endpoint, input.id),
        },
        "events": events,
    })
}

/// The compact SET of these claims, signed by this region's key (`typ: secevent+jwt`).
pub fn sign(
    signer: &crate::oauth::tokens::Signer,
    input: SetInput<'_>,
) -> Result<String, jsonwebtoken::errors::Error> {
    signer.sign_typed(SET_TYPE, &claims(input))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input<'a>(intent: &'a Intent) -> SetInput<'a> {
        SetInput {
            issuer: "https://scim.example",
            audience: "https://rx.example",
            jti: "eu.7",
            endpoint: "Users",
            id: "u1",
            intent,
            at_millis: 1_700_000_000_123,
        }
    }

    #[test]
    fn a_deactivation_is_a_patch_notice_and_a_deactivate_event_about_one_subject() {
        let intent = Intent {
            op: Some(Op::Patch),
            attributes: vec!["active".into()],
            access: Some(Access::Deactivate),
        };
        let c = claims(input(&intent));
        assert_eq!(c["jti"], "eu.7");
        assert_eq!(c["txn"], "eu.7");
        assert_eq!(c["iat"], 1_700_000_000);
        assert_eq!(c["sub_id"], json!({"format": "scim", "uri": "/Users/u1"}));
        assert_eq!(
            c["events"],
            json!({
                PATCH_NOTICE: {"attributes": ["active"]},
                DEACTIVATE: {},
            })
        );
        assert!(c.get("sub").is_none() && c.get("exp").is_none());
    }

    #[test]
    fn creates_puts_and_deletes_name_their_own_event() {
        let create = Intent {
            op: Some(Op::Create),
            attributes: vec!["userName".into()],
            access: None,
        };
        assert!(claims(input(&create))["events"][CREATE_NOTICE].is_object());
        let put = Intent {
            op: Some(Op::Put),
            access: Some(Access::Activate),
            ..create.clone()
        };
        let events = claims(input(&put))["events"].clone();
        assert!(events[PUT_NOTICE].is_object() && events[ACTIVATE].is_object());
        let delete = Intent {
            op: Some(Op::Delete),
            attributes: vec![],
            access: None,
        };
        assert_eq!(claims(input(&delete))["events"], json!({ DELETE: {} }));
    }
}
