//! The hub as a receiving FHIR server: `POST /fhir/r4` with a transaction Bundle, so one
//! Vigil hub (or any system that sends conditional creates) can push to another.
//!
//! Supported entries: `POST {Type}` with `ifNoneExist: identifier=system|value` (created
//! unless a resource of that type has that identifier; then the existing one is answered,
//! 200, and nothing is duplicated) and `PUT {Type}/{id}` (created or replaced). The whole
//! Bundle is applied in one storage transaction and answered with a transaction-response.
//! Errors are OperationOutcomes: 400 for a body that is not a Bundle, 422 for entries this
//! server does not support, 401/403 for credentials (integration or admin tokens only), 413
//! above [`MAX_BUNDLE`] bytes. Received resources are listed by `GET /api/v1/ehr/inbound`.

use crate::auth::User;
use crate::{ApiError, AppState, access};
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use vigil_fhir::{IssueType, Resource, Severity};
use vigil_model::Timestamp;
use vigil_store::push::{InboundResult, InboundWrite};

/// Largest Bundle accepted, in bytes.
pub const MAX_BUNDLE: usize = 16 << 20;
/// Most entries in one Bundle.
pub const MAX_ENTRIES: usize = 10_000;
const FHIR_JSON: &str = "application/fhir+json";

/// An error as an OperationOutcome.
fn outcome(status: StatusCode, code: IssueType, diagnostics: &str) -> Response {
    let oo = Resource::OperationOutcome(vigil_fhir::operation_outcome(
        Severity::Error,
        code,
        diagnostics,
    ));
    let body = serde_json::to_string(&oo).unwrap_or_default();
    let mut r = (status, [(header::CONTENT_TYPE, FHIR_JSON)], body).into_response();
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
    }
    r
}

fn api_outcome(e: ApiError) -> Response {
    let code = match &e {
        ApiError::Unauthorized => IssueType::Login,
        ApiError::Forbidden => IssueType::Forbidden,
        ApiError::Internal(msg) => {
            tracing::error!(error = %msg, "internal error");
            return outcome(
                StatusCode::INTERNAL_SERVER_ERROR,
                IssueType::Exception,
                "the hub could not complete the request; it has been logged",
            );
        }
        ApiError::Conflict(_) => IssueType::Conflict,
        _ => IssueType::Invalid,
    };
    outcome(e.status(), code, &e.to_string())
}

/// A FHIR id: 1-64 of `A-Za-z0-9-.`.
fn is_fhir_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// A resource type name: a capital letter then letters.
fn is_type_name(s: &str) -> bool {
    let mut b = s.bytes();
    s.len() <= 64
        && b.next().is_some_and(|c| c.is_ascii_uppercase())
        && b.all(|c| c.is_ascii_alphabetic())
}

/// An entry that cannot be taken: 400 (malformed) or 422 (not supported).
struct Refusal(StatusCode, IssueType, String);

fn malformed(i: usize, what: &str) -> Refusal {
    Refusal(
        StatusCode::BAD_REQUEST,
        IssueType::Structure,
        format!("entry {i}: {what}"),
    )
}

fn unsupported(i: usize, what: &str) -> Refusal {
    Refusal(
        StatusCode::UNPROCESSABLE_ENTITY,
        IssueType::NotSupported,
        format!("entry {i}: {what}"),
    )
}

/// The (system, value) pairs of a resource's identifiers.
fn identifiers(resource: &Value) -> Vec<(&str, &str)> {
    resource["identifier"]
        .as_array()
        .map(|l| {
            l.iter()
                .filter_map(|i| Some((i["system"].as_str()?, i["value"].as_str()?)))
                .collect()
        })
        .unwrap_or_default()
}

/// `identifier=system|value` (the parts may be percent-encoded).
fn parse_if_none_exist(s: &str) -> Option<(String, String)> {
    let q = s.strip_prefix("identifier=")?;
    if q.contains('&') {
        return None;
    }
    let q = crate::oauth::form_decode_component(&q.replace('+', "%2B"))?;
    let (system, value) = q.split_once('|')?;
    (!system.is_empty() && !value.is_empty()).then(|| (system.to_owned(), value.to_owned()))
}

fn entry_write(i: usize, e: &Value) -> Result<InboundWrite, Refusal> {
    let resource = e
        .get("resource")
        .filter(|r| r.is_object())
        .ok_or_else(|| malformed(i, "has no resource"))?;
    let ty = resource["resourceType"]
        .as_str()
        .filter(|t| is_type_name(t))
        .ok_or_else(|| malformed(i, "resource has no valid resourceType"))?;
    if matches!(ty, "Bundle" | "OperationOutcome") {
        return Err(unsupported(
            i,
            "a Bundle or OperationOutcome cannot be stored",
        ));
    }
    let id = match resource.get("id") {
        None => None,
        Some(v) => Some(
            v.as_str()
                .filter(|s| is_fhir_id(s))
                .ok_or_else(|| malformed(i, "resource.id is not a valid FHIR id"))?,
        ),
    };
    let request = e
        .get("request")
        .filter(|r| r.is_object())
        .ok_or_else(|| malformed(i, "has no request"))?;
    let method = request["method"]
        .as_str()
        .ok_or_else(|| malformed(i, "request.method is missing"))?;
    let url = request["url"]
        .as_str()
        .ok_or_else(|| malformed(i, "request.url is missing"))?;
    match method {
        "POST" => {
            if url != ty {
                return Err(malformed(
                    i,
                    "request.url of a POST must be the resource type",
                ));
            }
            let cond = request["ifNoneExist"].as_str().ok_or_else(|| {
                unsupported(
                    i,
                    "only conditional creates (ifNoneExist: identifier=system|value) are supported",
                )
            })?;
            let (system, value) = parse_if_none_exist(cond).ok_or_else(|| {
                unsupported(i, "ifNoneExist must be exactly identifier=system|value")
            })?;
            if !identifiers(resource)
                .iter()
                .any(|(s, v)| *s == system && *v == value)
            {
                return Err(unsupported(
                    i,
                    "the resource does not carry the identifier its ifNoneExist names",
                ));
            }
            Ok(InboundWrite::CreateIfNone {
                resource_type: ty.to_owned(),
                id: id.map(str::to_owned),
                system,
                value,
                body: resource.clone(),
            })
        }
        "PUT" => {
            let (uty, uid) = url
                .split_once('/')
                .ok_or_else(|| malformed(i, "request.url of a PUT must be Type/id"))?;
            if uty != ty || !is_fhir_id(uid) || uid.contains('?') {
                return Err(unsupported(
                    i,
                    "request.url of a PUT must be Type/id of the resource (no conditional update)",
                ));
            }
            if id.is_some_and(|id| id != uid) {
                return Err(malformed(
                    i,
                    "resource.id differs from the id in request.url",
                ));
            }
            let mut body = resource.clone();
            body["id"] = Value::String(uid.to_owned());
            Ok(InboundWrite::Put {
                resource_type: ty.to_owned(),
                id: uid.to_owned(),
                identifier: identifiers(resource)
                    .first()
                    .map(|(s, v)| ((*s).to_owned(), (*v).to_owned())),
                body,
            })
        }
        m => Err(unsupported(
            i,
            &format!("request.method {m} is not supported (POST and PUT are)"),
        )),
    }
}

fn response_entry(r: &InboundResult) -> Value {
    json!({
        "response": {
            "status": if r.created { "201 Created" } else { "200 OK" },
            "location": format!("{}/{}/_history/{}", r.resource_type, r.id, r.version),
            "etag": format!("W/\"{}\"", r.version),
        }
    })
}

/// `POST /fhir/r4`: a transaction Bundle.
pub(crate) async fn transaction(
    State(st): State<AppState>,
    user: Result<User, ApiError>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let user = match user {
        Ok(u) => u,
        Err(e) => return api_outcome(e),
    };
    if let Err(e) = access::require_operator(&user) {
        return api_outcome(e);
    }
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::trim)
        .unwrap_or("");
    if ct != FHIR_JSON && ct != "application/json" {
        return outcome(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            IssueType::NotSupported,
            "the body must be application/fhir+json",
        );
    }
    let Ok(bytes) = axum::body::to_bytes(body, MAX_BUNDLE).await else {
        return outcome(
            StatusCode::PAYLOAD_TOO_LARGE,
            IssueType::TooCostly,
            &format!("the Bundle exceeds {MAX_BUNDLE} bytes"),
        );
    };
    let bundle: Value = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(e) => {
            return outcome(
                StatusCode::BAD_REQUEST,
                IssueType::Structure,
                &format!("the body is not JSON: {e}"),
            );
        }
    };
    if bundle["resourceType"] != "Bundle" {
        return outcome(
            StatusCode::BAD_REQUEST,
            IssueType::Invalid,
            "the body must be a Bundle resource",
        );
    }
    if bundle["type"] != "transaction" {
        return outcome(
            StatusCode::UNPROCESSABLE_ENTITY,
            IssueType::NotSupported,
            "only Bundles of type transaction are supported",
        );
    }
    let entries = match bundle.get("entry") {
        None => &Vec::new(),
        Some(Value::Array(a)) => a,
        Some(_) => {
            return outcome(
                StatusCode::BAD_REQUEST,
                IssueType::Structure,
                "Bundle.entry must be an array",
            );
        }
    };
    if entries.len() > MAX_ENTRIES {
        return outcome(
            StatusCode::PAYLOAD_TOO_LARGE,
            IssueType::TooCostly,
            &format!("a Bundle may hold at most {MAX_ENTRIES} entries"),
        );
    }
    let mut writes = Vec::with_capacity(entries.len());
    for (i, e) in entries.iter().enumerate() {
        match entry_write(i, e) {
            Ok(w) => writes.push(w),
            Err(Refusal(status, code, msg)) => return outcome(status, code, &msg),
        }
    }
    let results = match st.store.inbound_transaction(writes, Timestamp::now()).await {
        Ok(r) => r,
        Err(e) => return api_outcome(e.into()),
    };
    let created = results.iter().filter(|r| r.created).count();
    tracing::debug!(
        client = %user.name,
        entries = results.len(),
        created,
        "FHIR transaction received"
    );
    let answer = json!({
        "resourceType": "Bundle",
        "type": "transaction-response",
        "entry": results.iter().map(response_entry).collect::<Vec<_>>(),
    });
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, FHIR_JSON)],
        answer.to_string(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status_of(e: &Value) -> Option<StatusCode> {
        entry_write(0, e).err().map(|Refusal(s, _, _)| s)
    }

    #[test]
    fn entries_vigil_sends_are_taken_and_others_refused_with_the_right_status() {
        let obs =
            vigil_fhir::Bundle::transaction(vec![Resource::Observation(vigil_fhir::Observation {
                id: Some("abc".into()),
                identifier: vec![vigil_fhir::Identifier::new("urn:vigil:observation", "abc")],
                status: "final".into(),
                ..Default::default()
            })]);
        let v = serde_json::to_value(Resource::Bundle(obs)).expect("json");
        let e = &v["entry"][0];
        match entry_write(0, e) {
            Ok(InboundWrite::CreateIfNone { system, value, .. }) => {
                assert_eq!(
                    (system.as_str(), value.as_str()),
                    ("urn:vigil:observation", "abc")
                );
            }
            _ => panic!("a conditional create"),
        }
        let mut other = e.clone();
        other["request"]["ifNoneExist"] = json!("identifier=urn:vigil:observation|zzz");
        assert_eq!(status_of(&other), Some(StatusCode::UNPROCESSABLE_ENTITY));
        let mut other = e.clone();
        other["request"]["method"] = json!("DELETE");
        assert_eq!(status_of(&other), Some(StatusCode::UNPROCESSABLE_ENTITY));
        let mut other = e.clone();
        other["request"]
            .as_object_mut()
            .expect("object")
            .remove("ifNoneExist");
        assert_eq!(status_of(&other), Some(StatusCode::UNPROCESSABLE_ENTITY));
        let mut other = e.clone();
        other["resource"]["id"] = json!("bad id!");
        assert_eq!(status_of(&other), Some(StatusCode::BAD_REQUEST));
        assert_eq!(
            status_of(&json!({"request": {}})),
            Some(StatusCode::BAD_REQUEST)
        );
        let put = json!({"resource": {"resourceType": "Flag", "id": "f1"}, "request": {"method": "PUT", "url": "Flag/f2"}});
        assert_eq!(status_of(&put), Some(StatusCode::BAD_REQUEST));
        assert_eq!(
            parse_if_none_exist("identifier=urn%3Avigil%3Aalert%7Cx1"),
            Some(("urn:vigil:alert".into(), "x1".into()))
        );
        assert_eq!(parse_if_none_exist("identifier=a|b&_id=c"), None);
    }
}
