//! The routes other than `/dump` ([`crate::dump`]) and `/openapi.json`
//! ([`crate::openapi`]), and what they share: query parameters and choosing the target.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use snapdump::process::find::{self, ProcessSummary};
use uuid::Uuid;

use crate::AppState;
use crate::operations::{CancelOutcome, Operation};
use crate::problem::Problem;
use crate::rules::RuleDescription;
use crate::uid::{self, RuntimeIds};

/// Query parameters, names matched without regard to case (as ASP.NET binds them).
#[derive(Debug, Default)]
pub struct Params(BTreeMap<&'static str, String>);

impl Params {
    /// Parses `raw`, accepting only the parameters named in `allowed` (lower case); an
    /// unknown one is a 400, so a misspelt `egressprovider` never streams by surprise.
    pub fn parse(raw: Option<&str>, allowed: &[&'static str]) -> Result<Params, Problem> {
        let mut params = BTreeMap::new();
        for (key, value) in form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
            let lower = key.to_ascii_lowercase();
            let Some(&name) = allowed.iter().find(|a| **a == lower) else {
                return Err(Problem::bad_request(
                    "unknown_parameter",
                    format!(
                        "unknown query parameter {key:?}; this route takes: {}",
                        allowed.join(", ")
                    ),
                ));
            };
            params
                .entry(name)
                .and_modify(|v: &mut String| {
                    v.push(',');
                    v.push_str(&value);
                })
                .or_insert_with(|| value.into_owned());
        }
        Ok(Params(params))
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }
}

/// Tags: comma-separated, each 1–64 printable ASCII characters.
pub fn parse_tags(text: Option<&str>) -> Result<Vec<String>, Problem> {
    let mut tags = Vec::new();
    for tag in text.unwrap_or_default().split(',').map(str::trim) {
        if tag.is_empty() {
            continue;
        }
        if tag.len() > 64 || !tag.chars().all(|c| c.is_ascii_graphic() || c == ' ') {
            return Err(Problem::bad_request(
                "bad_tags",
                format!(
                    "tag {tag:?}: tags are 1 to 64 printable ASCII characters, comma-separated"
                ),
            ));
        }
        if !tags.iter().any(|t| t == tag) {
            tags.push(tag.to_owned());
        }
    }
    Ok(tags)
}

/// A process chosen by `pid`, `uid`, `name` or by being the only dumpable one.
#[derive(Clone, Debug)]
pub struct Selected {
    pub pid: i32,
    pub name: String,
    /// The raw comm, for file names.
    pub comm: Vec<u8>,
}

fn parse_pid(text: &str) -> Result<i32, Problem> {
    match text.trim().parse::<i32>() {
        Ok(pid) if pid > 0 => Ok(pid),
        _ => Err(Problem::bad_request(
            "bad_pid",
            format!("pid {text:?} is not a process id (a positive integer)"),
        )),
    }
}

/// The one dumpable process, if there is exactly one (other than this server).
fn default_process(list: &[ProcessSummary]) -> Option<&ProcessSummary> {
    let mut dumpable = list.iter().filter(|p| p.not_dumpable.is_none());
    match (dumpable.next(), dumpable.next()) {
        (Some(only), None) => Some(only),
        _ => None,
    }
}

/// How a request names its process: the `pid`, `uid` and `name` query parameters.
#[derive(Clone, Debug, Default)]
pub struct Selector {
    pub pid: Option<String>,
    pub uid: Option<String>,
    pub name: Option<String>,
}

impl Selector {
    pub fn from_params(params: &Params) -> Selector {
        let get = |name| params.get(name).map(str::to_owned);
        Selector {
            pid: get("pid"),
            uid: get("uid"),
            name: get("name"),
        }
    }

    /// Neither pid, uid nor name: the default process.
    pub fn is_empty(&self) -> bool {
        self.pid.is_none() && self.uid.is_none() && self.name.is_none()
    }
}

/// Chooses the target (reads `/proc`, may ask .NET runtimes for their cookie: call it on a
/// blocking thread). With `dumpable`, a process the engine would refuse is a problem here
/// already, before any 200 or 202.
pub fn select(selector: &Selector, ids: &RuntimeIds, dumpable: bool) -> Result<Selected, Problem> {
    let given = [&selector.pid, &selector.uid, &selector.name]
        .iter()
        .filter(|s| s.is_some())
        .count();
    if given > 1 {
        return Err(Problem::bad_request(
            "ambiguous_selector",
            "give one of pid, uid and name, not several",
        ));
    }
    let pid = match (&selector.pid, &selector.uid, &selector.name) {
        (Some(pid), _, _) => parse_pid(pid)?,
        (_, Some(text), _) => {
            let uid = uid::parse_uid(text)?;
            ids.find(&uid, find::all_pids())?
        }
        (_, _, Some(name)) => find::find_by_name(name).map_err(|e| Problem::from_engine(&e))?,
        (None, None, None) => {
            let list = find::list_processes();
            match default_process(&list) {
                Some(only) => only.pid,
                None => {
                    let count = list.iter().filter(|p| p.not_dumpable.is_none()).count();
                    return Err(Problem::bad_request(
                        "no_default_process",
                        format!(
                            "{count} processes can be dumped, so none is the default: \
                             choose one with pid, uid or name (see GET /processes)"
                        ),
                    ));
                }
            }
        }
    };
    let comm = if dumpable {
        snapdump::process::check_dumpable(pid)
            .map_err(|e| Problem::from_engine(&e))?
            .0
            .comm
    } else {
        snapdump::process::read_stat(pid)
            .map_err(|_| Problem::from_engine(&snapdump::Error::NoSuchProcess { pid }))?
            .comm
    };
    Ok(Selected {
        pid,
        name: String::from_utf8_lossy(&comm).into_owned(),
        comm,
    })
}

/// Runs `f` on a blocking thread (it reads `/proc`).
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Problem> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Problem::internal(&e))
}

/// One entry of `GET /processes`.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProcessEntry {
    pub pid: i32,
    /// The .NET runtime instance cookie (dotnet-monitor's `uid`), for .NET 5 and later.
    pub uid: Option<String>,
    pub name: String,
    pub exe_name: Option<String>,
    pub command_line: String,
    /// The Unix user id the process runs as.
    pub user_id: u32,
    pub threads: i64,
    pub rss_bytes: u64,
    /// Whether `/dump` would take it.
    pub dumpable: bool,
    /// Why not, when it cannot be dumped.
    pub not_dumpable_reason: Option<String>,
    /// The process `/dump` takes without pid or name: the only dumpable one.
    pub is_default: bool,
}

impl ProcessEntry {
    fn new(p: &ProcessSummary, uid: Option<String>, default_pid: Option<i32>) -> ProcessEntry {
        ProcessEntry {
            pid: p.pid,
            uid,
            name: p.name.clone(),
            exe_name: p.exe_name.clone(),
            command_line: p.command_line.clone(),
            user_id: p.uid,
            threads: p.threads,
            rss_bytes: p.rss_bytes,
            dumpable: p.not_dumpable.is_none(),
            not_dumpable_reason: p.not_dumpable.clone(),
            is_default: Some(p.pid) == default_pid,
        }
    }
}

/// `GET /processes`: every user-space process, dumpable or not.
pub async fn get_processes(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Json<Vec<ProcessEntry>>, Problem> {
    Params::parse(query.as_deref(), &[])?;
    let entries = blocking(move || {
        let list = find::list_processes();
        let default_pid = default_process(&list).map(|p| p.pid);
        list.iter()
            .map(|p| ProcessEntry::new(p, state.runtime_ids.of(p.pid), default_pid))
            .collect()
    })
    .await?;
    Ok(Json(entries))
}

/// `GET /process`: one process, as in `/processes`, with the platform.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProcessInfo {
    #[serde(flatten)]
    pub process: ProcessEntry,
    pub operating_system: &'static str,
    pub process_architecture: &'static str,
}

fn architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "x64",
        "aarch64" => "arm64",
        "x86" => "x86",
        "arm" => "arm",
        other => other,
    }
}

pub async fn get_process(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Json<ProcessInfo>, Problem> {
    let params = Params::parse(query.as_deref(), &["pid", "uid", "name"])?;
    let selector = Selector::from_params(&params);
    let info = blocking(move || -> Result<ProcessInfo, Problem> {
        let ids = &state.runtime_ids;
        let selected = select(&selector, ids, false)?;
        let summary = find::summarize(selected.pid).ok_or_else(|| {
            Problem::from_engine(&snapdump::Error::NoSuchProcess { pid: selected.pid })
        })?;
        let default_pid = selector.is_empty().then_some(selected.pid);
        Ok(ProcessInfo {
            process: ProcessEntry::new(&summary, ids.of(selected.pid), default_pid),
            operating_system: "linux",
            process_architecture: architecture(),
        })
    })
    .await??;
    Ok(Json(info))
}

/// `GET /operations?tags=a,b`: the operations carrying all those tags.
pub async fn get_operations(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Json<Vec<Operation>>, Problem> {
    let params = Params::parse(query.as_deref(), &["tags"])?;
    let tags = parse_tags(params.get("tags"))?;
    Ok(Json(state.operations.list(&tags)))
}

fn operation_id(text: &str) -> Result<Uuid, Problem> {
    Uuid::parse_str(text).map_err(|_| {
        Problem::not_found(
            "no_such_operation",
            format!("no operation {text:?} (operation ids are UUIDs)"),
        )
    })
}

fn unknown_operation(id: Uuid) -> Problem {
    Problem::not_found(
        "no_such_operation",
        format!("no operation {id}: it never existed or was forgotten"),
    )
}

pub async fn get_operation(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Operation>, Problem> {
    let id = operation_id(&id)?;
    state
        .operations
        .get(id)
        .map(Json)
        .ok_or_else(|| unknown_operation(id))
}

/// `DELETE /operations/{id}`: cancels a running dump. 202 while it stops (the operation then
/// turns `Cancelled`), 400 if it is not running, 404 if unknown.
pub async fn delete_operation(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, Problem> {
    let id = operation_id(&id)?;
    match state.operations.cancel(id) {
        CancelOutcome::Cancelling => Ok(StatusCode::ACCEPTED),
        CancelOutcome::NotRunning(status) => Err(Problem::bad_request(
            "operation_not_running",
            format!("operation {id} is not running (it is {status:?})"),
        )),
        CancelOutcome::Unknown => Err(unknown_operation(id)),
    }
}

/// `GET /collectionrules`: every collection rule of the config, by name.
pub async fn get_collection_rules(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Json<Vec<RuleDescription>>, Problem> {
    Params::parse(query.as_deref(), &[])?;
    Ok(Json(state.rules.list()))
}

/// `GET /collectionrules/{name}`: one rule.
pub async fn get_collection_rule(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<RuleDescription>, Problem> {
    state.rules.get(&name).map(Json).ok_or_else(|| {
        let names: Vec<String> = state.rules.list().into_iter().map(|r| r.name).collect();
        Problem::not_found(
            "no_such_collection_rule",
            format!(
                "no collection rule named {name:?}; configured: {}",
                if names.is_empty() {
                    "none".to_owned()
                } else {
                    names.join(", ")
                }
            ),
        )
    })
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EgressInfo {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Info {
    pub name: &'static str,
    pub version: &'static str,
    pub pid: u32,
    pub operating_system: &'static str,
    pub process_architecture: &'static str,
    /// `ApiKey` or `None` (`--no-auth`).
    pub authentication: &'static str,
    pub max_concurrent_dumps: usize,
    pub dumps_in_progress: usize,
    pub egress_providers: Vec<EgressInfo>,
}

pub async fn get_info(State(state): State<AppState>) -> Json<Info> {
    Json(Info {
        name: "snapdump",
        version: env!("CARGO_PKG_VERSION"),
        pid: std::process::id(),
        operating_system: "linux",
        process_architecture: architecture(),
        authentication: if state.auth.is_disabled() {
            "None"
        } else {
            "ApiKey"
        },
        max_concurrent_dumps: state.max_concurrent_dumps,
        dumps_in_progress: state.dumps_in_progress(),
        egress_providers: state
            .egress
            .values()
            .map(|p| EgressInfo {
                name: p.name.clone(),
                kind: match p.kind {
                    crate::egress::EgressKind::File { .. } => "file",
                    crate::egress::EgressKind::S3 => "s3",
                    crate::egress::EgressKind::Azure => "azureBlob",
                },
            })
            .collect(),
    })
}

pub async fn get_metrics(State(state): State<AppState>) -> Response {
    let mut text = state.metrics.render(state.dumps_in_progress());
    let rules = state.rules.list();
    if !rules.is_empty() {
        text.push_str(
            "# HELP snapdump_collection_rule_dumps_total Dumps taken by each collection rule.\n\
             # TYPE snapdump_collection_rule_dumps_total counter\n",
        );
        for rule in &rules {
            text.push_str(&format!(
                "snapdump_collection_rule_dumps_total{{rule=\"{}\"}} {}\n",
                rule.name, rule.dumps_taken
            ));
        }
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// `GET /livez`: the process serves requests.
pub async fn get_livez() -> &'static str {
    "Healthy"
}

/// `GET /readyz`: ready for dumps (it is as soon as it listens).
pub async fn get_readyz() -> &'static str {
    "Healthy"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_are_case_insensitive_and_strict() {
        let p = Params::parse(
            Some("PID=5&egressProvider=x&tags=a&Tags=b"),
            &["pid", "egressprovider", "tags"],
        )
        .unwrap();
        assert_eq!(p.get("pid"), Some("5"));
        assert_eq!(p.get("egressprovider"), Some("x"));
        assert_eq!(p.get("tags"), Some("a,b"));
        let e = Params::parse(Some("pdi=5"), &["pid"]).unwrap_err();
        assert_eq!(e.code, "unknown_parameter");
        assert!(Params::parse(None, &[]).is_ok());
    }

    #[test]
    fn tags() {
        assert_eq!(parse_tags(Some(" a, b,,a ")).unwrap(), vec!["a", "b"]);
        assert!(parse_tags(None).unwrap().is_empty());
        assert_eq!(parse_tags(Some("é")).unwrap_err().code, "bad_tags");
        assert!(parse_tags(Some(&"x".repeat(65))).is_err());
    }

    #[test]
    fn pids() {
        assert_eq!(parse_pid("42").unwrap(), 42);
        for bad in ["abc", "0", "-1", "", "1.5", "99999999999"] {
            assert_eq!(parse_pid(bad).unwrap_err().code, "bad_pid", "{bad:?}");
        }
    }
}
