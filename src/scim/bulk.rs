//! Bulk requests (RFC 7644 §3.7): parsing, targets and `bulkId` references. Pure.
//!
//! A bulk request is parsed in two layers. The envelope (`schemas`, `failOnErrors`,
//! `Operations`, the `maxOperations` limit) is all or nothing: a broken envelope is one error for
//! the whole request. Each operation is parsed on its own, and a broken operation becomes a SCIM
//! error in its own entry of the answer, so one bad operation never hides what the others did.
//!
//! Operations run in the order given. `bulkId:<id>` in an operation's path or anywhere in its
//! data (a group member's `value`, a manager's `value`) names the resource an earlier POST of the
//! same request created with that `bulkId`; [`BulkIds`] tracks what each bulkId became and
//! resolves references. A reference to a bulkId that no operation defines, that a later operation
//! defines, whose POST failed, or that its own POST defines (a circular reference) fails that
//! operation with 409 and a detail saying which, and the rest of the request goes on.

use std::collections::HashMap;

use serde_json::{Map, Value};

use super::error::{ScimError, ScimResult};
use super::schema::ResourceKind;

/// The URN of a bulk request.
pub const BULK_REQUEST_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:BulkRequest";
/// The URN of a bulk response.
pub const BULK_RESPONSE_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:BulkResponse";
/// What a reference to a bulkId starts with.
pub const BULK_ID_PREFIX: &str = "bulkId:";

/// The HTTP methods a bulk operation may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Post,
    Put,
    Patch,
    Delete,
}

impl Method {
    /// The method as the answer echoes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
        }
    }
}

/// A parsed bulk request.
#[derive(Debug)]
pub struct BulkRequest {
    /// Stop after this many failed operations (`failOnErrors`); `None`: run them all.
    pub fail_on_errors: Option<usize>,
    /// The operations in order, each parsed or with the error its entry answers.
    pub operations: Vec<Result<Operation, Failed>>,
}

/// One well-formed operation.
#[derive(Debug, Clone, PartialEq)]
pub struct Operation {
    pub method: Method,
    /// The resource type the path names.
    pub kind: ResourceKind,
    /// The id the path names (PUT, PATCH, DELETE), maybe a `bulkId:` reference.
    pub id: Option<String>,
    /// The client's name for the resource a POST creates.
    pub bulk_id: Option<String>,
    /// `version`: the ETag the resource must have (acts as `If-Match`).
    pub version: Option<String>,
    /// The request body (POST, PUT, PATCH).
    pub data: Option<Value>,
}

/// An operation that cannot run: what its entry echoes, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Failed {
    /// The `method` as sent, when it was a string.
    pub method: Option<String>,
    /// The `bulkId` as sent, when it was a string.
    pub bulk_id: Option<String>,
    pub error: ScimError,
}

/// Parse a bulk request body with at most `max_operations` operations (more: 413, RFC 7644
/// §3.7.4).
pub fn parse_request(body: &Value, max_operations: usize) -> ScimResult<BulkRequest> {
    let Value::Object(members) = body else {
        return Err(ScimError::InvalidSyntax(
            "a BulkRequest body must be a JSON object".into(),
        ));
    };
    let get = |name: &str| {
        members
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
            .filter(|v| !v.is_null())
    };
    let names_bulk = get("schemas")
        .and_then(Value::as_array)
        .is_some_and(|s| s.iter().any(|s| s.as_str() == Some(BULK_REQUEST_SCHEMA)));
    if !names_bulk {
        return Err(ScimError::InvalidValue(format!(
            "'schemas' of a BulkRequest must be an array containing \"{BULK_REQUEST_SCHEMA}\""
        )));
    }
    let fail_on_errors = match get("failOnErrors") {
        None => None,
        Some(v) => match v.as_u64() {
            Some(n) if n >= 1 => Some(usize::try_from(n).unwrap_or(usize::MAX)),
            _ => {
                return Err(ScimError::InvalidValue(format!(
                    "'failOnErrors' must be a positive integer, got {v}"
                )))
            }
        },
    };
    let Some(Value::Array(ops)) = get("Operations") else {
        return Err(ScimError::InvalidValue(
            "a BulkRequest needs an 'Operations' array".into(),
        ));
    };
    if ops.len() > max_operations {
        return Err(ScimError::PayloadTooLarge(format!(
            "the bulk request has {} operations, more than maxOperations ({max_operations})",
            ops.len()
        )));
    }
    let mut operations = Vec::with_capacity(ops.len());
    let mut defined: HashMap<String, usize> = HashMap::new();
    for (i, op) in ops.iter().enumerate() {
        let mut parsed = parse_operation(op);
        if let Ok(Operation {
            bulk_id: Some(b), ..
        }) = &parsed
        {
            if let Some(first) = defined.get(b) {
                parsed = Err(Failed {
                    method: Some("POST".into()),
                    bulk_id: Some(b.clone()),
                    error: ScimError::InvalidValue(format!(
                        "bulkId {b:?} is already defined by operation {}",
                        first + 1
                    )),
                });
            } else {
                defined.insert(b.clone(), i);
            }
        }
        operations.push(parsed);
    }
    Ok(BulkRequest {
        fail_on_errors,
        operations,
    })
}

/// Parse one operation of `Operations`.
pub fn parse_operation(op: &Value) -> Result<Operation, Failed> {
    let field = |name: &str| {
        op.as_object().and_then(|m| {
            m.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v)
                .filter(|v| !v.is_null())
        })
    };
    let method_text = field("method").and_then(Value::as_str).map(str::to_string);
    let bulk_id = field("bulkId").and_then(Value::as_str).map(str::to_string);
    let fail = |error: ScimError| Failed {
        method: method_text.clone(),
        bulk_id: bulk_id.clone(),
        error,
    };
    if !op.is_object() {
        return Err(fail(ScimError::InvalidSyntax(
            "each bulk operation must be a JSON object".into(),
        )));
    }
    let method = match method_text
        .as_deref()
        .map(str::to_ascii_uppercase)
        .as_deref()
    {
        Some("POST") => Method::Post,
        Some("PUT") => Method::Put,
        Some("PATCH") => Method::Patch,
        Some("DELETE") => Method::Delete,
        Some(other) => {
            return Err(fail(ScimError::InvalidValue(format!(
                "method {other:?} is not one of POST, PUT, PATCH, DELETE"
            ))))
        }
        None => {
            return Err(fail(ScimError::InvalidValue(
                "each bulk operation needs a 'method' string".into(),
            )))
        }
    };
    let Some(path) = field("path").and_then(Value::as_str) else {
        return Err(fail(ScimError::InvalidValue(
            "each bulk operation needs a 'path' string such as \"/Users\"".into(),
        )));
    };
    let (kind, id) = parse_path(path).map_err(fail)?;
    match (method, &id) {
        (Method::Post, Some(_)) => {
            return Err(fail(ScimError::InvalidPath(format!(
                "a POST creates a resource: its path names a type (\"/Users\", \"/Groups\"), \
                 not {path:?}"
            ))))
        }
        (Method::Put | Method::Patch | Method::Delete, None) => {
            return Err(fail(ScimError::InvalidPath(format!(
                "a {} names one resource: its path is \"/Users/<id>\" or \"/Groups/<id>\", \
                 not {path:?}",
                method.as_str()
            ))))
        }
        _ => {}
    }
    if method == Method::Post {
        match &bulk_id {
            None => {
                return Err(fail(ScimError::InvalidValue(
                    "a POST operation needs a 'bulkId' (RFC 7644 §3.7)".into(),
                )))
            }
            Some(b) if b.is_empty() || b.len() > 128 || b.contains(char::is_whitespace) => {
                return Err(fail(ScimError::InvalidValue(format!(
                    "bulkId {b:?} must be 1-128 characters without spaces"
                ))))
            }
            _ => {}
        }
    }
    if field("bulkId").is_some() && bulk_id.is_none() {
        return Err(fail(ScimError::InvalidValue(
            "'bulkId' must be a string".into(),
        )));
    }
    let version = match field("version") {
        None => None,
        Some(Value::String(v)) => Some(v.clone()),
        Some(v) => {
            return Err(fail(ScimError::InvalidValue(format!(
                "'version' must be a string (an ETag), got {v}"
            ))))
        }
    };
    let data = field("data").cloned();
    match (method, &data) {
        (Method::Delete, _) => {}
        (_, Some(Value::Object(_))) => {}
        _ => {
            return Err(fail(ScimError::InvalidSyntax(format!(
                "a {} operation needs a 'data' object (the request body)",
                method.as_str()
            ))))
        }
    }
    Ok(Operation {
        method,
        kind,
        id,
        bulk_id: if method == Method::Post {
            bulk_id
        } else {
            None
        },
        version,
        data: if method == Method::Delete { None } else { data },
    })
}

/// `/Users`, `/Groups/<id>` (the leading `/` optional): the type and the id, if any.
fn parse_path(path: &str) -> ScimResult<(ResourceKind, Option<String>)> {
    let trimmed = path.trim().trim_start_matches('/');
    let (endpoint, id) = match trimmed.split_once('/') {
        Some((e, id)) => (e, Some(id)),
        None => (trimmed, None),
    };
    let kind = if endpoint.eq_ignore_ascii_case("Users") {
        ResourceKind::User
    } else if endpoint.eq_ignore_ascii_case("Groups") {
        ResourceKind::Group
    } else {
        return Err(ScimError::InvalidPath(format!(
            "path {path:?} names no resource type: use /Users or /Groups"
        )));
    };
    match id {
        None => Ok((kind, None)),
        Some(id) if crate::ids::is_plausible_id(id) && !id.contains('/') => {
            Ok((kind, Some(id.to_string())))
        }
        Some(_) => Err(ScimError::InvalidPath(format!(
            "path {path:?} is not \"/{}/<id>\"",
            kind.endpoint()
        ))),
    }
}

/// What each bulkId of one request has become so far.
#[derive(Debug, Default)]
pub struct BulkIds {
    /// Which operation (0-based) defines each bulkId.
    defined_by: HashMap<String, usize>,
    /// The id each bulkId's POST created.
    created: HashMap<String, String>,
    /// BulkIds whose POST failed.
    failed: std::collections::HashSet<String>,
}

impl BulkIds {
    /// The bulkIds the request's POSTs define.
    pub fn new(request: &BulkRequest) -> BulkIds {
        let mut ids = BulkIds::default();
        for (i, op) in request.operations.iter().enumerate() {
            if let Ok(Operation {
                bulk_id: Some(b), ..
            }) = op
            {
                ids.defined_by.entry(b.clone()).or_insert(i);
            }
        }
        ids
    }

    /// The POST of `bulk_id` created `id`.
    pub fn created(&mut self, bulk_id: &str, id: &str) {
        self.created.insert(bulk_id.to_string(), id.to_string());
    }

    /// The POST of `bulk_id` failed: operations referring to it fail too.
    pub fn failed(&mut self, bulk_id: &str) {
        self.failed.insert(bulk_id.to_string());
    }

    /// Operation `index` with every `bulkId:` reference (in its path id and its data) replaced
    /// by the id it names; 409 naming the reference when one cannot be resolved now.
    pub fn resolve(&self, index: usize, op: &Operation) -> ScimResult<Operation> {
        let mut out = op.clone();
        if let Some(id) = &op.id {
            if let Some(r) = id.strip_prefix(BULK_ID_PREFIX) {
                out.id = Some(self.lookup(index, op, r)?);
            }
        }
        if let Some(data) = out.data.as_mut() {
            self.resolve_value(index, op, data)?;
        }
        Ok(out)
    }

    fn resolve_value(&self, index: usize, op: &Operation, v: &mut Value) -> ScimResult<()> {
        match v {
            Value::String(s) => {
                if let Some(r) = s.strip_prefix(BULK_ID_PREFIX) {
                    *s = self.lookup(index, op, r)?;
                }
            }
            Value::Array(items) => {
                for item in items {
                    self.resolve_value(index, op, item)?;
                }
            }
            Value::Object(m) => resolve_map(self, index, op, m)?,
            _ => {}
        }
        Ok(())
    }

    fn lookup(&self, index: usize, op: &Operation, reference: &str) -> ScimResult<String> {
        if let Some(id) = self.created.get(reference) {
            return Ok(id.clone());
        }
        let conflict = |why: String| Err(ScimError::Conflict(why));
        if op.bulk_id.as_deref() == Some(reference) {
            return conflict(format!(
                "bulkId:{reference} refers to the resource this same operation creates (a \
                 circular reference)"
            ));
        }
        if self.failed.contains(reference) {
            return conflict(format!(
                "bulkId:{reference} cannot be resolved: the operation that creates it failed"
            ));
        }
        match self.defined_by.get(reference) {
            Some(&at) if at > index => conflict(format!(
                "bulkId:{reference} is created by a later operation ({}); operations run in \
                 order, so put it first",
                at + 1
            )),
            _ => conflict(format!(
                "bulkId:{reference} is not defined by any POST of this request"
            )),
        }
    }
}

fn resolve_map(
    ids: &BulkIds,
    index: usize,
    op: &Operation,
    m: &mut Map<String, Value>,
) -> ScimResult<()> {
    for (_, v) in m.iter_mut() {
        ids.resolve_value(index, op, v)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn request(ops: Value) -> Value {
        json!({"schemas": [BULK_REQUEST_SCHEMA], "Operations": ops})
    }

    fn user_post(bulk_id: &str) -> Value {
        json!({"method": "POST", "path": "/Users", "bulkId": bulk_id,
               "data": {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": bulk_id}})
    }

    #[test]
    fn an_envelope_without_the_schema_or_operations_is_refused_whole() {
        assert!(parse_request(&json!({"Operations": []}), 10).is_err());
        assert!(parse_request(&json!({"schemas": [BULK_REQUEST_SCHEMA]}), 10).is_err());
        assert!(parse_request(&json!([1]), 10).is_err());
        let bad = json!({"schemas": [BULK_REQUEST_SCHEMA], "failOnErrors": 0, "Operations": []});
        assert_eq!(
            parse_request(&bad, 10).unwrap_err().scim_type(),
            Some("invalidValue")
        );
    }

    #[test]
    fn more_operations_than_allowed_is_413() {
        let ops = json!([user_post("a"), user_post("b"), user_post("c")]);
        let err = parse_request(&request(ops), 2).unwrap_err();
        assert_eq!(err.status(), 413);
    }

    #[test]
    fn operations_parse_with_their_targets() {
        let ops = json!([
            user_post("a"),
            {"method": "put", "path": "/Users/u1", "version": "W/\"x\"", "data": {"userName": "b"}},
            {"method": "PATCH", "path": "Groups/bulkId:g", "data": {"Operations": []}},
            {"method": "DELETE", "path": "/Users/u2", "data": {"ignored": true}},
        ]);
        let r = parse_request(&request(ops), 10).unwrap();
        assert_eq!(r.fail_on_errors, None);
        let ops: Vec<Operation> = r.operations.into_iter().map(Result::unwrap).collect();
        assert_eq!(
            (ops[0].method, ops[0].kind, ops[0].id.as_deref()),
            (Method::Post, ResourceKind::User, None)
        );
        assert_eq!(ops[0].bulk_id.as_deref(), Some("a"));
        assert_eq!(ops[1].version.as_deref(), Some("W/\"x\""));
        assert_eq!(ops[1].id.as_deref(), Some("u1"));
        assert_eq!(
            (ops[2].kind, ops[2].id.as_deref()),
            (ResourceKind::Group, Some("bulkId:g"))
        );
        assert_eq!((ops[3].method, &ops[3].data), (Method::Delete, &None));
    }

    #[test]
    fn a_broken_operation_gets_its_own_error_and_the_others_parse() {
        let ops = json!([
            {"method": "GET", "path": "/Users/x", "bulkId": "q"},
            {"method": "POST", "path": "/Users", "data": {}},
            {"method": "POST", "path": "/Users/abc", "bulkId": "z", "data": {}},
            {"method": "DELETE", "path": "/Users"},
            {"method": "PUT", "path": "/Users/x"},
            {"method": "POST", "path": "/Widgets", "bulkId": "w", "data": {}},
            "not an object",
            user_post("a"),
            user_post("a"),
        ]);
        let r = parse_request(&request(ops), 20).unwrap();
        let errs: Vec<Option<&'static str>> = r
            .operations
            .iter()
            .map(|o| o.as_ref().err().map(|f| f.error.scim_type().unwrap_or("")))
            .collect();
        assert_eq!(
            errs,
            [
                Some("invalidValue"),
                Some("invalidValue"),
                Some("invalidPath"),
                Some("invalidPath"),
                Some("invalidSyntax"),
                Some("invalidPath"),
                Some("invalidSyntax"),
                None,
                Some("invalidValue"),
            ]
        );
        let first = r.operations[0].as_ref().unwrap_err();
        assert_eq!(
            (first.method.as_deref(), first.bulk_id.as_deref()),
            (Some("GET"), Some("q"))
        );
    }

    #[test]
    fn references_resolve_to_what_earlier_posts_created() {
        let ops = json!([
            user_post("u"),
            {"method": "POST", "path": "/Groups", "bulkId": "g",
             "data": {"displayName": "G", "members": [{"value": "bulkId:u"}, {"value": "plain"}]}},
            {"method": "PATCH", "path": "/Groups/bulkId:g", "data": {"Operations": [
                {"op": "add", "path": "members", "value": [{"value": "bulkId:u"}]}]}},
        ]);
        let r = parse_request(&request(ops), 10).unwrap();
        let mut ids = BulkIds::new(&r);
        let op = |i: usize| r.operations[i].clone().unwrap();
        assert_eq!(ids.resolve(0, &op(0)).unwrap(), op(0));
        // Before the user exists, the group's reference cannot be resolved.
        assert_eq!(ids.resolve(1, &op(1)).unwrap_err().status(), 409);
        ids.created("u", "id-u");
        let g = ids.resolve(1, &op(1)).unwrap();
        assert_eq!(
            g.data.unwrap()["members"],
            json!([{"value": "id-u"}, {"value": "plain"}])
        );
        ids.created("g", "id-g");
        let p = ids.resolve(2, &op(2)).unwrap();
        assert_eq!(p.id.as_deref(), Some("id-g"));
        assert_eq!(
            p.data.unwrap()["Operations"][0]["value"][0]["value"],
            "id-u"
        );
    }

    #[test]
    fn unresolvable_references_say_why() {
        let ops = json!([
            {"method": "POST", "path": "/Groups", "bulkId": "g",
             "data": {"displayName": "G", "members": [{"value": "bulkId:later"}]}},
            {"method": "POST", "path": "/Groups", "bulkId": "self",
             "data": {"displayName": "S", "members": [{"value": "bulkId:self"}]}},
            {"method": "DELETE", "path": "/Users/bulkId:nobody"},
            {"method": "DELETE", "path": "/Users/bulkId:broken"},
            user_post("later"),
        ]);
        let r = parse_request(&request(ops), 10).unwrap();
        let mut ids = BulkIds::new(&r);
        ids.failed("broken");
        let detail = |i: usize| {
            let op = r.operations[i].clone().unwrap();
            let e = ids.resolve(i, &op).unwrap_err();
            assert_eq!(e.status(), 409);
            e.detail().to_string()
        };
        assert!(detail(0).contains("later operation (5)"), "{}", detail(0));
        assert!(detail(1).contains("circular"), "{}", detail(1));
        assert!(detail(2).contains("not defined"), "{}", detail(2));
        assert!(detail(3).contains("failed"), "{}", detail(3));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_operations_never_panic(op in proptest::arbitrary::any::<String>(), method in "(POST|PUT|PATCH|DELETE|get)", path in "[/A-Za-z:]{0,20}") {
            let body = request(json!([{"method": method, "path": path, "bulkId": op, "data": {"x": op}}]));
            let _ = parse_request(&body, 5);
        }
    }
}
