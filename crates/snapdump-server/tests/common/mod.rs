//! Helpers shared by the server's tests: states with a key, requests through
//! `tower::ServiceExt::oneshot`, polling operations, a small checker of responses against the
//! OpenAPI document, and reading dumps back with gdb.

#![allow(dead_code)]

use std::path::Path;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use bytes::Bytes;
use http_body_util::BodyExt;
use serde_json::Value;
use snapdump_server::auth::{self, Auth};
use snapdump_server::egress::EgressProvider;
use snapdump_server::{AppState, app};
use snapdump_test_support::tools;
use tower::ServiceExt;

/// A state accepting one fresh key, which is returned.
pub fn state_with_key(max_dumps: usize, egress: Vec<EgressProvider>) -> (AppState, String) {
    let key = auth::generate_key();
    let hash = auth::hash_key(&key);
    let auth = Auth::from_hashes([hash.as_str()]).unwrap();
    (AppState::new(auth, egress, max_dumps), key)
}

/// A response, body read in full.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "{}: body is not JSON ({e}): {:?}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn content_type(&self) -> &str {
        self.headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    pub fn location(&self) -> String {
        self.headers
            .get(header::LOCATION)
            .expect("a Location header")
            .to_str()
            .unwrap()
            .to_owned()
    }

    /// Asserts a problem+json body with this status and code.
    pub fn assert_problem(&self, status: StatusCode, code: &str) {
        assert_eq!(
            self.status,
            status,
            "body: {}",
            String::from_utf8_lossy(&self.body)
        );
        assert_eq!(self.content_type(), "application/problem+json");
        let json = self.json();
        assert_eq!(json["status"], status.as_u16(), "{json}");
        assert_eq!(json["code"], code, "{json}");
        assert!(json["type"].is_string() && json["title"].is_string());
        assert!(!json["detail"].as_str().unwrap().is_empty());
    }
}

pub fn request(method: Method, uri: &str, key: Option<&str>) -> Request<Body> {
    let mut builder = Request::builder().method(method).uri(uri);
    if let Some(key) = key {
        builder = builder.header(header::AUTHORIZATION, format!("Bearer {key}"));
    }
    builder.body(Body::empty()).unwrap()
}

/// One request through the router, without a socket.
pub async fn call(app: &Router, method: Method, uri: &str, key: Option<&str>) -> Reply {
    let response = app
        .clone()
        .oneshot(request(method, uri, key))
        .await
        .unwrap();
    let (parts, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

pub async fn get(app: &Router, uri: &str, key: &str) -> Reply {
    call(app, Method::GET, uri, Some(key)).await
}

/// Polls `GET location` until the operation leaves Running (at most `limit`).
pub async fn wait_finished(app: &Router, location: &str, key: &str, limit: Duration) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let op = get(app, location, key).await.json();
        if op["status"] != "Running" {
            return op;
        }
        assert!(Instant::now() < deadline, "operation still running: {op}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn router(state: &AppState) -> Router {
    app(state.clone())
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// gdb opens the core and lists every one of `tids`.
pub fn gdb_sees_threads(exe: &Path, core: &Path, tids: &[i32]) {
    let out = tools::gdb(exe, core, &["info threads"]);
    for tid in tids {
        assert!(
            out.contains(&format!("LWP {tid}")),
            "gdb lacks thread {tid}:\n{out}"
        );
    }
}

pub fn assert_elf_core(bytes: &[u8]) {
    assert!(bytes.len() > 64, "dump too short: {} bytes", bytes.len());
    assert_eq!(&bytes[..4], b"\x7fELF");
    assert_eq!(
        u16::from_le_bytes([bytes[16], bytes[17]]),
        4,
        "e_type ET_CORE"
    );
}

// ---------------------------------------------------------------------------------------------
// OpenAPI: the subset of JSON Schema the document uses
// ---------------------------------------------------------------------------------------------

fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(reference) => {
            let pointer = reference.trim_start_matches('#');
            resolve(
                doc,
                doc.pointer(pointer)
                    .unwrap_or_else(|| panic!("bad $ref {reference}")),
            )
        }
        None => schema,
    }
}

/// Checks `value` against `schema` (type, nullable, required, properties, items, enum, allOf,
/// $ref); also refuses properties the schema does not name, so the document cannot fall
/// behind the code.
pub fn validate(doc: &Value, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
    let schema = resolve(doc, schema);
    if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
        // Properties may come from any part: check each part without the "no other
        // properties" rule, then the union of names.
        let mut names = Vec::new();
        for part in all {
            let part = resolve(doc, part);
            validate_inner(doc, part, value, at, false)?;
            if let Some(props) = part.get("properties").and_then(Value::as_object) {
                names.extend(props.keys().cloned());
            }
        }
        if let Some(object) = value.as_object() {
            for key in object.keys() {
                if !names.contains(key) {
                    return Err(format!("{at}: property {key:?} is not in the document"));
                }
            }
        }
        return Ok(());
    }
    validate_inner(doc, schema, value, at, true)
}

fn validate_inner(
    doc: &Value,
    schema: &Value,
    value: &Value,
    at: &str,
    closed: bool,
) -> Result<(), String> {
    if value.is_null() {
        return if schema.get("nullable") == Some(&Value::Bool(true)) {
            Ok(())
        } else {
            Err(format!("{at}: null where the document does not allow it"))
        };
    }
    if let Some(kind) = schema.get("type").and_then(Value::as_str) {
        let ok = match kind {
            "object" => value.is_object(),
            "array" => value.is_array(),
            "string" => value.is_string(),
            "integer" => value.is_i64() || value.is_u64(),
            "number" => value.is_number(),
            "boolean" => value.is_boolean(),
            other => return Err(format!("{at}: unknown type {other}")),
        };
        if !ok {
            return Err(format!("{at}: {value} is not {kind}"));
        }
    }
    if let Some(options) = schema.get("enum").and_then(Value::as_array)
        && !options.contains(value)
    {
        return Err(format!("{at}: {value} is not one of {options:?}"));
    }
    if let Some(object) = value.as_object() {
        let props = schema.get("properties").and_then(Value::as_object);
        for name in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            if !object.contains_key(name) {
                return Err(format!("{at}: required property {name:?} missing"));
            }
        }
        if let Some(props) = props {
            for (key, item) in object {
                match props.get(key) {
                    Some(sub) => validate(doc, sub, item, &format!("{at}.{key}"))?,
                    None if closed => {
                        return Err(format!("{at}: property {key:?} is not in the document"));
                    }
                    None => {}
                }
            }
        }
    }
    if let (Some(items), Some(array)) = (schema.get("items"), value.as_array()) {
        for (i, item) in array.iter().enumerate() {
            validate(doc, items, item, &format!("{at}[{i}]"))?;
        }
    }
    Ok(())
}

/// The schema the document gives for (`path`, `method`, `status`, media type).
pub fn response_schema(
    doc: &Value,
    path: &str,
    method: &str,
    status: u16,
    media: &str,
) -> Option<Value> {
    let escaped = path.replace('~', "~0").replace('/', "~1");
    let response = doc.pointer(&format!("/paths/{escaped}/{method}/responses/{status}"))?;
    response
        .pointer(&format!("/content/{}/schema", media.replace('/', "~1")))
        .cloned()
        .or(Some(Value::Null))
}

/// Asserts that the document lists this response and that the body fits its schema.
pub fn assert_documented(doc: &Value, path: &str, method: &str, reply: &Reply) {
    let media = reply
        .content_type()
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_owned();
    let status = reply.status.as_u16();
    let schema = response_schema(doc, path, method, status, &media)
        .unwrap_or_else(|| panic!("{method} {path}: status {status} is not documented"));
    if schema.is_null() {
        assert!(
            reply.body.is_empty() || media.is_empty(),
            "{method} {path} {status}: body of type {media:?} is not documented"
        );
        return;
    }
    if media.ends_with("json") {
        validate(
            doc,
            &schema,
            &reply.json(),
            &format!("{method} {path} {status}"),
        )
        .unwrap_or_else(|e| panic!("{e}"));
    }
}
