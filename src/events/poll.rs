//! The poll request of a SET receiver (RFC 8936 §2.4) and the answer's shape (§2.5).
//!
//! A poll acknowledges what the receiver got (`ack`), reports what it could not process
//! (`setErrs`: acknowledged too, with the reason, so a SET the receiver refuses is not sent
//! forever), and asks for at most `maxEvents` more (0: only acknowledge). With
//! `returnImmediately: false` (the default) a poll with nothing pending waits for an event,
//! up to the server's limit.

use serde_json::{json, Map, Value};

use crate::scim::ScimError;

/// The longest `jti` accepted in an acknowledgement (ours are `origin.sequence`).
const MAX_JTI: usize = 256;

/// A parsed poll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PollRequest {
    /// The jtis acknowledged.
    pub ack: Vec<String>,
    /// The jtis the receiver could not process: (jti, err, description).
    pub set_errs: Vec<(String, String, String)>,
    /// How many SETs to answer at most (already lowered to the server's limit).
    pub max_events: usize,
    pub return_immediately: bool,
}

/// Parse a poll body (empty: poll with the defaults). `max_events` is the server's limit
/// (`events.poll_max_events`), also the default.
pub fn parse(body: &[u8], max_events: usize) -> Result<PollRequest, ScimError> {
    let bad = |detail: String| ScimError::InvalidSyntax(detail);
    let value: Value = if body.iter().all(u8::is_ascii_whitespace) {
        Value::Object(Map::new())
    } else {
        serde_json::from_slice(body).map_err(|e| bad(format!("the poll is not JSON: {e}")))?
    };
    let Value::Object(obj) = value else {
        return Err(bad("the poll must be a JSON object".into()));
    };
    let mut request = PollRequest {
        ack: Vec::new(),
        set_errs: Vec::new(),
        max_events,
        return_immediately: false,
    };
    let jti = |v: &Value, what: &str| -> Result<String, ScimError> {
        match v.as_str() {
            Some(s) if !s.is_empty() && s.len() <= MAX_JTI => Ok(s.to_string()),
            _ => Err(bad(format!(
                "{what} must hold jti strings of 1-{MAX_JTI} characters"
            ))),
        }
    };
    for (key, v) in &obj {
        match key.as_str() {
            "ack" => {
                let list = v
                    .as_array()
                    .ok_or_else(|| bad("ack must be an array of jti strings".into()))?;
                request.ack = list
                    .iter()
                    .map(|j| jti(j, "ack"))
                    .collect::<Result<_, _>>()?;
            }
            "setErrs" => {
                let map = v
                    .as_object()
                    .ok_or_else(|| bad("setErrs must map jtis to {err, description}".into()))?;
                for (j, e) in map {
                    let j = jti(&Value::String(j.clone()), "setErrs")?;
                    let text = |k: &str| e.get(k).and_then(Value::as_str).map(str::to_string);
                    let err = text("err")
                        .ok_or_else(|| bad(format!("setErrs[{j:?}] must have an err string")))?;
                    request
                        .set_errs
                        .push((j, err, text("description").unwrap_or_default()));
                }
            }
            "maxEvents" => {
                let n = v
                    .as_u64()
                    .ok_or_else(|| bad("maxEvents must be a non-negative integer".into()))?;
                request.max_events = usize::try_from(n).unwrap_or(usize::MAX).min(max_events);
            }
            "returnImmediately" => {
                request.return_immediately = v
                    .as_bool()
                    .ok_or_else(|| bad("returnImmediately must be a boolean".into()))?;
            }
            // RFC 8936 lets a receiver send members a transmitter does not know; ignored.
            _ => {}
        }
    }
    Ok(request)
}

/// The answer to a poll: `sets` maps jti to the compact SET.
pub fn response(sets: &[(String, String)], more_available: bool) -> Value {
    let sets: Map<String, Value> = sets
        .iter()
        .map(|(jti, set)| (jti.clone(), Value::String(set.clone())))
        .collect();
    json!({ "sets": sets, "moreAvailable": more_available })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poll_acknowledges_reports_errors_and_asks_for_at_most_the_limit() {
        let body = br#"{"ack": ["eu.1", "eu.2"], "maxEvents": 5000, "returnImmediately": true,
                        "setErrs": {"us.3": {"err": "invalid_key", "description": "no key"}},
                        "futureMember": 1}"#;
        let r = parse(body, 100).unwrap();
        assert_eq!(r.ack, vec!["eu.1".to_string(), "eu.2".into()]);
        assert_eq!(
            r.set_errs,
            vec![("us.3".into(), "invalid_key".into(), "no key".into())]
        );
        assert_eq!(r.max_events, 100);
        assert!(r.return_immediately);
        let empty = parse(b"", 100).unwrap();
        assert_eq!((empty.max_events, empty.return_immediately), (100, false));
        assert_eq!(parse(br#"{"maxEvents": 0}"#, 100).unwrap().max_events, 0);
    }

    #[test]
    fn malformed_polls_are_invalid_syntax_naming_the_member() {
        for (body, word) in [
            (&b"[1]"[..], "object"),
            (b"{", "JSON"),
            (br#"{"ack": "eu.1"}"#, "ack"),
            (br#"{"ack": [1]}"#, "ack"),
            (br#"{"ack": [""]}"#, "ack"),
            (br#"{"maxEvents": -1}"#, "maxEvents"),
            (br#"{"returnImmediately": "yes"}"#, "returnImmediately"),
            (br#"{"setErrs": {"eu.1": {}}}"#, "err"),
        ] {
            match parse(body, 10) {
                Err(ScimError::InvalidSyntax(d)) => assert!(d.contains(word), "{d}"),
                other => panic!("{}: {other:?}", String::from_utf8_lossy(body)),
            }
        }
    }

    #[test]
    fn the_answer_maps_jtis_to_sets() {
        let r = response(&[("eu.1".into(), "a.b.c".into())], true);
        assert_eq!(r, json!({"sets": {"eu.1": "a.b.c"}, "moreAvailable": true}));
    }
}
