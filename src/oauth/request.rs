//! The token request (RFC 6749 §4.4.2) and its error answers (§5.2), pure: headers and body
//! in, the grant and the client's credentials out.
//!
//! The client authenticates with HTTP Basic (§2.3.1: id and secret each form-urlencoded, then
//! joined by ':' and base64-encoded) or with `client_id` and `client_secret` in the form body;
//! never both at once (§2.3: one method per request). Parameters may not repeat (§3.2).

use serde_json::{json, Value};

/// The only grant this server issues tokens for.
pub const CLIENT_CREDENTIALS: &str = "client_credentials";

/// An error answer of the token endpoint (RFC 6749 §5.2).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OAuthError {
    /// The request is malformed: wrong content type, a parameter missing or repeated, two
    /// authentication methods.
    #[error("invalid_request: {0}")]
    InvalidRequest(&'static str),
    /// Client authentication failed: no credentials, an unknown client or a wrong secret.
    #[error("invalid_client: {0}")]
    InvalidClient(&'static str),
    /// A `grant_type` other than `client_credentials`.
    #[error("unsupported_grant_type: {0}")]
    UnsupportedGrantType(&'static str),
    /// The server failed (a token could not be signed); never the client's input.
    #[error("server_error: {0}")]
    ServerError(&'static str),
}

/// Every `error` code the token endpoint answers, for metrics that start at zero.
pub const ERROR_CODES: [&str; 4] = [
    "invalid_request",
    "invalid_client",
    "unsupported_grant_type",
    "server_error",
];

impl OAuthError {
    /// The `error` code, also the metrics label.
    pub fn code(&self) -> &'static str {
        match self {
            OAuthError::InvalidRequest(_) => "invalid_request",
            OAuthError::InvalidClient(_) => "invalid_client",
            OAuthError::UnsupportedGrantType(_) => "unsupported_grant_type",
            OAuthError::ServerError(_) => "server_error",
        }
    }

    /// The HTTP status: 401 for a failed client authentication, else 400.
    pub fn status(&self) -> u16 {
        match self {
            OAuthError::InvalidClient(_) => 401,
            OAuthError::ServerError(_) => 500,
            _ => 400,
        }
    }

    /// The `error_description`: fixed texts, never an echo of the request.
    pub fn description(&self) -> &'static str {
        match self {
            OAuthError::InvalidRequest(d)
            | OAuthError::InvalidClient(d)
            | OAuthError::UnsupportedGrantType(d)
            | OAuthError::ServerError(d) => d,
        }
    }

    /// The JSON body.
    pub fn to_json(&self) -> Value {
        json!({"error": self.code(), "error_description": self.description()})
    }
}

/// A well-formed client credentials request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRequest {
    pub client_id: String,
    pub client_secret: String,
}

/// Parse a request to the token endpoint from its `Content-Type` and `Authorization` headers
/// and its body. Malformed input is an error answer, never a panic.
pub fn parse(
    content_type: Option<&str>,
    authorization: Option<&str>,
    body: &[u8],
) -> Result<TokenRequest, OAuthError> {
    let media_type = content_type
        .and_then(|c| c.split(';').next())
        .map(|m| m.trim().to_ascii_lowercase());
    if media_type.as_deref() != Some("application/x-www-form-urlencoded") {
        return Err(OAuthError::InvalidRequest(
            "the body must be application/x-www-form-urlencoded",
        ));
    }
    let mut grant_type = None;
    let mut form_id = None;
    let mut form_secret = None;
    for (name, value) in form_urlencoded::parse(body) {
        let slot = match name.as_ref() {
            "grant_type" => &mut grant_type,
            "client_id" => &mut form_id,
            "client_secret" => &mut form_secret,
            _ => continue, // `scope` and extensions: ignored (§3.3, §8.2)
        };
        if slot.replace(value.into_owned()).is_some() {
            return Err(OAuthError::InvalidRequest(
                "a parameter is repeated (RFC 6749 section 3.2)",
            ));
        }
    }
    let basic = match authorization {
        Some(header) => Some(basic_credentials(header)?),
        None => None,
    };
    let (client_id, client_secret) = match (basic, form_id, form_secret) {
        (Some(_), _, Some(_)) => {
            return Err(OAuthError::InvalidRequest(
                "use one client authentication method: HTTP Basic or client_secret in the body",
            ))
        }
        (Some((id, _)), Some(form_id), None) if form_id != id => {
            return Err(OAuthError::InvalidRequest(
                "client_id in the body differs from the one in HTTP Basic",
            ))
        }
        (Some((id, secret)), _, None) => (id, secret),
        (None, Some(id), Some(secret)) => (id, secret),
        (None, _, _) => {
            return Err(OAuthError::InvalidClient(
                "client authentication is required: HTTP Basic or client_id and client_secret",
            ))
        }
    };
    match grant_type.as_deref() {
        None | Some("") => Err(OAuthError::InvalidRequest("grant_type is required")),
        Some(CLIENT_CREDENTIALS) => Ok(TokenRequest {
            client_id,
            client_secret,
        }),
        Some(_) => Err(OAuthError::UnsupportedGrantType(
            "only grant_type=client_credentials is supported",
        )),
    }
}

/// The id and secret of an `Authorization: Basic …` header (RFC 6749 §2.3.1, RFC 7617).
fn basic_credentials(header: &str) -> Result<(String, String), OAuthError> {
    use base64::Engine;
    let bad = || OAuthError::InvalidClient("the Authorization header is not valid HTTP Basic");
    let (scheme, rest) = header.trim().split_once(' ').ok_or_else(bad)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(OAuthError::InvalidClient(
            "authenticate the client with HTTP Basic (or in the body)",
        ));
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .map_err(|_| bad())?;
    let text = String::from_utf8(decoded).map_err(|_| bad())?;
    let (id, secret) = text.split_once(':').ok_or_else(bad)?;
    Ok((
        form_decode(id).ok_or_else(bad)?,
        form_decode(secret).ok_or_else(bad)?,
    ))
}

/// Undo application/x-www-form-urlencoded on one value ('+' is a space, %XX a byte).
fn form_decode(s: &str) -> Option<String> {
    let spaced = s.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8()
        .ok()
        .map(|c| c.into_owned())
}

/// The successful answer (RFC 6749 §5.1).
pub fn token_response(access_token: &str, expires_in: u64) -> Value {
    json!({"access_token": access_token, "token_type": "Bearer", "expires_in": expires_in})
}

#[cfg(test)]
mod tests {
    use super::*;

    const FORM: Option<&str> = Some("application/x-www-form-urlencoded");

    fn basic(id: &str, secret: &str) -> String {
        use base64::Engine;
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"))
        )
    }

    #[test]
    fn credentials_come_from_basic_or_from_the_body() {
        let want = Ok(TokenRequest {
            client_id: "c1".into(),
            client_secret: "s1".into(),
        });
        let b = basic("c1", "s1");
        assert_eq!(
            parse(FORM, Some(&b), b"grant_type=client_credentials"),
            want
        );
        assert_eq!(
            parse(
                FORM,
                None,
                b"grant_type=client_credentials&client_id=c1&client_secret=s1"
            ),
            want
        );
        // A client_id in the body next to Basic is fine when it is the same one.
        assert_eq!(
            parse(
                FORM,
                Some(&b),
                b"grant_type=client_credentials&client_id=c1"
            ),
            want
        );
        // Parameters on the media type, case and `scope` do not matter.
        assert_eq!(
            parse(
                Some("Application/X-WWW-Form-Urlencoded; charset=UTF-8"),
                Some(&b.replace("Basic", "basic")),
                b"scope=scim&grant_type=client_credentials"
            ),
            want
        );
    }

    #[test]
    fn basic_credentials_are_form_urlencoded_inside() {
        let b = basic("my%20client", "a%3Ab+c");
        let r = parse(FORM, Some(&b), b"grant_type=client_credentials").unwrap();
        assert_eq!(r.client_id, "my client");
        assert_eq!(r.client_secret, "a:b c");
    }

    #[test]
    fn malformed_requests_get_the_right_error_code() {
        let b = basic("c1", "s1");
        let code = |ct, auth: Option<&str>, body: &[u8]| parse(ct, auth, body).unwrap_err().code();
        assert_eq!(
            code(None, Some(&b), b"grant_type=client_credentials"),
            "invalid_request"
        );
        assert_eq!(
            code(Some("application/json"), Some(&b), b"{}"),
            "invalid_request"
        );
        assert_eq!(code(FORM, Some(&b), b""), "invalid_request");
        assert_eq!(code(FORM, Some(&b), b"grant_type="), "invalid_request");
        assert_eq!(
            code(FORM, Some(&b), b"grant_type=password"),
            "unsupported_grant_type"
        );
        assert_eq!(
            code(
                FORM,
                Some(&b),
                b"grant_type=client_credentials&grant_type=client_credentials"
            ),
            "invalid_request"
        );
        assert_eq!(
            code(
                FORM,
                Some(&b),
                b"grant_type=client_credentials&client_secret=s1"
            ),
            "invalid_request"
        );
        assert_eq!(
            code(
                FORM,
                Some(&b),
                b"grant_type=client_credentials&client_id=c2"
            ),
            "invalid_request"
        );
        use base64::Engine;
        let no_colon = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("c1s1")
        );
        assert_eq!(
            code(FORM, Some(&no_colon), b"grant_type=client_credentials"),
            "invalid_client"
        );
        assert_eq!(
            code(FORM, Some("Basic"), b"grant_type=client_credentials"),
            "invalid_client"
        );
        assert_eq!(
            code(FORM, Some("Bearer x"), b"grant_type=client_credentials"),
            "invalid_client"
        );
        assert_eq!(
            code(FORM, Some("Basic !!!"), b"grant_type=client_credentials"),
            "invalid_client"
        );
        assert_eq!(
            code(FORM, None, b"grant_type=client_credentials"),
            "invalid_client"
        );
        assert_eq!(
            code(FORM, None, b"grant_type=client_credentials&client_id=c1"),
            "invalid_client"
        );
        // Invalid UTF-8 and percent escapes never panic.
        let _ = parse(
            FORM,
            None,
            b"grant_type=%FF%FE&client_id=\xff&client_secret=%",
        );
        let e = parse(FORM, None, b"grant_type=client_credentials").unwrap_err();
        assert_eq!(e.status(), 401);
        assert_eq!(e.to_json()["error"], "invalid_client");
    }

    #[test]
    fn every_error_code_is_listed_for_the_metrics() {
        for e in [
            OAuthError::InvalidRequest(""),
            OAuthError::InvalidClient(""),
            OAuthError::UnsupportedGrantType(""),
            OAuthError::ServerError(""),
        ] {
            assert!(ERROR_CODES.contains(&e.code()), "{}", e.code());
        }
    }

    #[test]
    fn descriptions_are_plain_ascii_without_quotes() {
        let b = basic("c1", "s1");
        for (ct, auth, body) in [
            (None, None, &b"x"[..]),
            (FORM, Some(b.as_str()), &b"grant_type=x"[..]),
            (FORM, None, &b"grant_type=client_credentials"[..]),
        ] {
            let d = parse(ct, auth, body).unwrap_err().description();
            assert!(
                d.bytes()
                    .all(|b| matches!(b, 0x20..=0x21 | 0x23..=0x5B | 0x5D..=0x7E)),
                "{d}"
            );
        }
    }
}
