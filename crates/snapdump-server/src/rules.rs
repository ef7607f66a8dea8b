//! Collection rules: the triggers of `snapdump watch`, run by the server for as long as it
//! runs, each dump going straight to a named egress provider.
//!
//! A rule is a [`WatchSpec`] built from its `[collection_rules.NAME]` table
//! ([`crate::config`]) and checked when the server starts. [`CollectionRules::start`] runs each
//! rule's [`snapdump::watch::watch`] on a thread of its own (the watcher's ptrace requests must
//! all come from one thread; it blocks for the rule's whole life). The watcher writes each dump
//! into the rule's private temporary folder (`$TMPDIR/snapdump-rule-NAME-…`, mode 0700, the
//! free-space reserve applies); the server then makes it an operation (tagged `rule:NAME` and
//! `trigger:cpu`, `trigger:signal`…), uploads the file to the rule's egress provider and
//! removes it. The operation is `Running` from the end of the dump until the upload ends;
//! `DELETE /operations/{id}` cancels the upload. A dump that fails is a `Failed` operation.
//! Operations, `/metrics` and the log count rule dumps like the others.
//!
//! Rule dumps do not take one of the `max_concurrent_dumps` slots: a rule is bounded by its own
//! `count` and `spacing`, an API request is never refused because a rule fired, and a rule's
//! trigger (a crash, say) is never lost because the API was busy.
//!
//! At shutdown every rule is cancelled: the watcher stops, any dump in progress is abandoned,
//! the target is left running and untraced, and uploads under way are aborted.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use serde::Serialize;
use snapdump::watch::{
    EndReason, Fired, Triggers, WatchEnd, WatchEvent, WatchSpec, WatchTarget, signals,
};
use snapdump::{Cancel, DumpReport, DumpRequest, Format, TargetSpec};
use tokio::io::AsyncReadExt;
use uuid::Uuid;

use crate::AppState;
use crate::config::{DurationValue, RuleConfig, SignalValue, SizeValue};
use crate::dump::{self, Digest, DumpType};
use crate::egress::{DumpMetadata, EgressProvider};
use crate::operations::{Completion, Operation, OperationError, OperationProcess, OperationStatus};
use crate::routes;

/// Bytes read from a dump file per upload chunk.
const CHUNK: usize = 1 << 20;

/// A rule that cannot be used, with what is wrong.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("collection rule {rule:?}: {reason}")]
pub struct RuleError {
    pub rule: String,
    pub reason: String,
}

/// A checked collection rule.
#[derive(Clone, Debug)]
pub struct Rule {
    pub name: String,
    /// What to watch and when to dump; `dump.output`, `dump.cancel` and `dump.guardian` are
    /// set when the rule starts.
    pub spec: WatchSpec,
    pub dump_type: DumpType,
    /// The egress provider's name (checked to exist).
    pub egress: String,
    /// `rule:NAME` and the configured tags.
    pub tags: Vec<String>,
}

/// Letters, digits, `-` and `_`; short enough for the `rule:NAME` tag.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 59
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// `512`, `"512MiB"`, `"2G"`, `"1.5 GiB"`.
pub fn parse_size(value: &SizeValue) -> Result<u64, String> {
    let text = match value {
        SizeValue::Bytes(n) => return Ok(*n),
        SizeValue::Text(text) => text.trim(),
    };
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let bad = || format!("{text:?} is not a size like 512MiB or 2GiB");
    let number: f64 = number.parse().map_err(|_| bad())?;
    let unit = unit.trim().to_ascii_uppercase();
    let factor: u64 = match unit.trim_end_matches("IB").trim_end_matches('B') {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        "T" => 1 << 40,
        _ => return Err(bad()),
    };
    if !number.is_finite() || number < 0.0 {
        return Err(bad());
    }
    Ok((number * factor as f64) as u64)
}

/// `30` (seconds), `"500ms"`, `"30s"`, `"10m"`, `"1h"`, `"1d"`.
pub fn parse_duration(value: &DurationValue) -> Result<Duration, String> {
    let (number, unit, text) = match value {
        DurationValue::Seconds(s) => (*s, "s".to_owned(), s.to_string()),
        DurationValue::Text(text) => {
            let t = text.trim();
            let split = t
                .find(|c: char| !c.is_ascii_digit() && c != '.')
                .unwrap_or(t.len());
            let (number, unit) = t.split_at(split);
            let number = number
                .parse::<f64>()
                .map_err(|_| format!("{text:?} is not a duration like 30s, 10m or 1h"))?;
            (number, unit.trim().to_ascii_lowercase(), text.clone())
        }
    };
    let seconds = match unit.as_str() {
        "ms" => number / 1000.0,
        "" | "s" => number,
        "m" | "min" => number * 60.0,
        "h" => number * 3600.0,
        "d" => number * 86400.0,
        _ => return Err(format!("{text:?} is not a duration like 30s, 10m or 1h")),
    };
    Duration::try_from_secs_f64(seconds)
        .map_err(|_| format!("{text:?} is not a duration like 30s, 10m or 1h"))
}

fn parse_signal(value: &SignalValue) -> Result<i32, String> {
    let signal = match value {
        SignalValue::Number(n) => signals::parse(&n.to_string())?,
        SignalValue::Name(name) => signals::parse(name)?,
    };
    if signal == libc_sigkill() {
        return Err("SIGKILL cannot be watched: it is never reported to a tracer".into());
    }
    Ok(signal)
}

/// SIGKILL's number on every Linux architecture.
fn libc_sigkill() -> i32 {
    9
}

impl Rule {
    /// Checks one `[collection_rules.NAME]` table; `egress_exists` says whether a provider of
    /// that name is configured.
    pub fn new(
        name: &str,
        config: &RuleConfig,
        egress_exists: impl Fn(&str) -> bool,
    ) -> Result<Rule, RuleError> {
        let fail = |reason: String| RuleError {
            rule: name.to_owned(),
            reason,
        };
        if !valid_name(name) {
            return Err(fail(
                "a rule's name is 1 to 59 letters, digits, '-' and '_'".into(),
            ));
        }
        let target = match (&config.process.pid, &config.process.name) {
            (Some(pid), None) if *pid > 0 => WatchTarget::Pid(*pid),
            (Some(pid), None) => return Err(fail(format!("pid {pid} is not a process id"))),
            (None, Some(process)) if !process.is_empty() => WatchTarget::Name {
                name: process.clone(),
                wait: true,
            },
            _ => {
                return Err(fail(
                    "process must be { pid = N } or { name = \"NAME\" }, one of the two".into(),
                ));
            }
        };
        if !egress_exists(&config.egress) {
            return Err(fail(format!(
                "no egress provider named {:?}: add [egress.{}] or --egress {}=URL",
                config.egress, config.egress, config.egress
            )));
        }
        let dump_type =
            dump::parse_dump_type(config.dump_type.as_deref()).map_err(|p| fail(p.detail))?;
        let format = dump::parse_format(config.format.as_deref()).map_err(|p| fail(p.detail))?;

        let t = &config.triggers;
        for (key, value) in [("cpu_above", t.cpu_above), ("cpu_below", t.cpu_below)] {
            if let Some(value) = value
                && !(value.is_finite() && value >= 0.0)
            {
                return Err(fail(format!(
                    "triggers.{key} = {value}: a CPU threshold is a percentage of one core, 0 or more"
                )));
            }
        }
        let size = |key: &str, value: &Option<SizeValue>| {
            value
                .as_ref()
                .map(parse_size)
                .transpose()
                .map_err(|e| fail(format!("triggers.{key}: {e}")))
        };
        let triggers = Triggers {
            cpu_above: t.cpu_above,
            cpu_below: t.cpu_below,
            mem_above: size("mem_above", &t.mem_above)?,
            mem_below: size("mem_below", &t.mem_below)?,
            threads: t.threads_above,
            fds: t.fds_above,
            signals: t
                .signal
                .iter()
                .map(parse_signal)
                .collect::<Result<_, _>>()
                .map_err(|e| fail(format!("triggers.signal: {e}")))?,
            on_crash: t.on_crash,
            on_exit: t.on_exit,
        };
        let duration = |key: &str, value: &Option<DurationValue>| {
            value
                .as_ref()
                .map(parse_duration)
                .transpose()
                .map_err(|e| fail(format!("{key}: {e}")))
        };
        let every = duration("triggers.every", &t.every)?;
        let spacing = duration("spacing", &config.spacing)?;
        let mut spec = WatchSpec::new(target);
        match (every, triggers.is_empty()) {
            (None, true) => {
                return Err(fail(
                    "no triggers: give one or more of cpu_above, cpu_below, mem_above, \
                     mem_below, threads_above, fds_above, signal, on_crash, on_exit, or every"
                        .into(),
                ));
            }
            (Some(_), false) => {
                return Err(fail(
                    "triggers.every dumps on a timer and goes alone; to space the dumps of \
                     other triggers, use spacing"
                        .into(),
                ));
            }
            (Some(every), true) => {
                if spacing.is_some() {
                    return Err(fail(
                        "with triggers.every, the dumps are `every` apart: drop spacing".into(),
                    ));
                }
                if every.is_zero() {
                    return Err(fail("triggers.every must be more than 0".into()));
                }
                spec.spacing = every;
            }
            (None, false) => {
                if let Some(spacing) = spacing {
                    spec.spacing = spacing;
                }
            }
        }
        spec.triggers = triggers;
        spec.count = config.count.unwrap_or(1);
        if spec.count == 0 {
            return Err(fail("count must be at least 1".into()));
        }
        if let Some(poll) = duration("poll", &config.poll)? {
            if poll < Duration::from_millis(10) {
                return Err(fail("poll must be at least 10ms".into()));
            }
            spec.poll = poll;
        }
        spec.duration = duration("duration", &config.duration)?;
        spec.dump = DumpRequest::new(TargetSpec::Pid(0))
            .mode(dump_type.mode())
            .redact(dump_type.redacts())
            .format(format);

        let mut tags = vec![format!("rule:{name}")];
        for tag in &config.tags {
            match routes::parse_tags(Some(tag)) {
                Ok(parsed) if parsed.len() == 1 && parsed[0] == *tag => {
                    if !tags.contains(tag) {
                        tags.push(tag.clone());
                    }
                }
                _ => {
                    return Err(fail(format!(
                        "tag {tag:?}: tags are 1 to 64 printable ASCII characters, no comma"
                    )));
                }
            }
        }
        Ok(Rule {
            name: name.to_owned(),
            spec,
            dump_type,
            egress: config.egress.clone(),
            tags,
        })
    }

    /// `pid 1234` or `name myservice`.
    fn process_text(&self) -> String {
        match &self.spec.target {
            WatchTarget::Pid(pid) => format!("pid {pid}"),
            WatchTarget::Name { name, .. } => format!("a process named {name}"),
        }
    }
}

/// Where a rule is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum RuleState {
    /// Watching, or waiting for its process.
    Running,
    /// Done: its dumps are taken, its process ended, its duration is over, or the server is
    /// stopping.
    Finished,
    /// Stopped by an error (the process could not be traced, a dump failed…).
    Failed,
}

/// A rule as `GET /collectionrules` shows it.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RuleDescription {
    pub name: String,
    pub state: RuleState,
    /// What the rule is doing or why it stopped, in words.
    pub state_reason: String,
    /// The process watched now, if any.
    pub process: Option<OperationProcess>,
    /// `cpu >= 90%, signal SIGUSR1`, or `every 600 s`.
    pub triggers: String,
    #[serde(rename = "type")]
    pub dump_type: String,
    pub format: String,
    pub egress_provider_name: String,
    /// Dumps the rule takes before it is finished.
    pub dump_limit: u32,
    /// Dumps taken (written; they count against the limit).
    pub dumps_taken: u32,
    /// Dumps that reached the egress provider.
    pub dumps_stored: u32,
    /// The operation of the last dump, and when that dump ended (RFC 3339, UTC).
    pub last_operation_id: Option<Uuid>,
    pub last_dump_time: Option<String>,
    /// The last failure: a dump, an upload, or the rule itself.
    pub last_error: Option<OperationError>,
}

/// One rule and what it is doing.
struct Running {
    rule: Rule,
    cancel: Cancel,
    status: Mutex<RuleDescription>,
}

impl Running {
    fn update(&self, f: impl FnOnce(&mut RuleDescription)) {
        f(&mut self.status.lock().unwrap_or_else(|e| e.into_inner()));
    }
}

/// Every rule of the server.
#[derive(Default)]
pub struct CollectionRules {
    rules: Vec<Arc<Running>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn error(code: &str, message: String) -> Option<OperationError> {
    Some(OperationError {
        code: code.to_owned(),
        message,
    })
}

impl CollectionRules {
    /// The rules, not yet started.
    pub fn new(mut rules: Vec<Rule>) -> CollectionRules {
        rules.sort_by(|a, b| a.name.cmp(&b.name));
        let rules = rules
            .into_iter()
            .map(|rule| {
                let triggers = if rule.spec.triggers.is_empty() {
                    format!("every {} s", rule.spec.spacing.as_secs_f64())
                } else {
                    rule.spec.triggers.to_string()
                };
                let status = RuleDescription {
                    name: rule.name.clone(),
                    state: RuleState::Running,
                    state_reason: "starting".into(),
                    process: None,
                    triggers,
                    dump_type: rule.dump_type.as_str().into(),
                    format: rule.spec.dump.format.as_str().into(),
                    egress_provider_name: rule.egress.clone(),
                    dump_limit: rule.spec.count,
                    dumps_taken: 0,
                    dumps_stored: 0,
                    last_operation_id: None,
                    last_dump_time: None,
                    last_error: None,
                };
                Arc::new(Running {
                    rule,
                    cancel: Cancel::new(),
                    status: Mutex::new(status),
                })
            })
            .collect();
        CollectionRules {
            rules,
            threads: Mutex::default(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Every rule, by name.
    pub fn list(&self) -> Vec<RuleDescription> {
        self.rules
            .iter()
            .map(|r| r.status.lock().unwrap_or_else(|e| e.into_inner()).clone())
            .collect()
    }

    pub fn get(&self, name: &str) -> Option<RuleDescription> {
        self.list().into_iter().find(|r| r.name == name)
    }

    /// Starts every rule on a thread of its own. Call from inside the server's runtime.
    pub fn start(&self, state: &AppState) {
        let runtime = tokio::runtime::Handle::current();
        let mut threads = self.threads.lock().unwrap_or_else(|e| e.into_inner());
        for running in &self.rules {
            let (running, state, runtime) = (running.clone(), state.clone(), runtime.clone());
            let name = running.rule.name.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("rule-{name}"))
                .spawn(move || run(&running, &state, &runtime));
            match spawned {
                Ok(thread) => threads.push(thread),
                Err(e) => {
                    let rule = self.rules.iter().find(|r| r.rule.name == name);
                    if let Some(rule) = rule {
                        rule.update(|s| {
                            s.state = RuleState::Failed;
                            s.state_reason = format!("cannot start its thread: {e}");
                        });
                    }
                }
            }
        }
    }

    /// Asks every rule to stop (at shutdown).
    pub fn stop(&self) {
        for rule in &self.rules {
            rule.cancel.cancel();
        }
    }

    /// Rule threads still running.
    pub fn running_threads(&self) -> usize {
        let mut threads = self.threads.lock().unwrap_or_else(|e| e.into_inner());
        threads.retain(|t| !t.is_finished());
        threads.len()
    }
}

/// A rule's thread: the watch, then the uploads it started.
fn run(running: &Arc<Running>, state: &AppState, runtime: &tokio::runtime::Handle) {
    let rule = &running.rule;
    let temp = match tempfile::Builder::new()
        .prefix(&format!("snapdump-rule-{}-", rule.name))
        .tempdir()
    {
        Ok(temp) => temp,
        Err(e) => {
            let message = format!(
                "cannot make a temporary folder in {}: {e}",
                std::env::temp_dir().display()
            );
            tracing::error!(rule = rule.name, "{message}");
            running.update(|s| {
                s.state = RuleState::Failed;
                s.state_reason = message.clone();
                s.last_error = error("io", message);
            });
            return;
        }
    };
    let mut spec = rule.spec.clone();
    spec.dump.output = Some(temp.path().to_owned());
    spec.dump.cancel = running.cancel.clone();
    spec.dump.guardian = state.snapshot_guardian.clone();
    running.update(|s| s.state_reason = format!("looking for {}", rule.process_text()));
    tracing::info!(
        rule = rule.name,
        "collection rule started: {}",
        rule.process_text()
    );

    let mut uploads = Vec::new();
    let result = {
        let mut on_event = |event: &WatchEvent<'_>| {
            if let Some(upload) = on_event(running, state, runtime, event) {
                uploads.push(upload);
            }
        };
        snapdump::watch::watch(&spec, &mut on_event)
    };
    // The files stay until their uploads are over.
    for upload in uploads {
        let _ = runtime.block_on(upload);
    }
    drop(temp);
    let (end_state, reason, last_error) = match &result {
        Ok(end) => (RuleState::Finished, end_reason(&spec, end), None),
        Err(e) => (
            RuleState::Failed,
            e.to_string(),
            error(e.name(), e.to_string()),
        ),
    };
    match &result {
        Ok(_) => tracing::info!(rule = rule.name, "collection rule finished: {reason}"),
        Err(_) => tracing::warn!(rule = rule.name, "collection rule failed: {reason}"),
    }
    running.update(|s| {
        s.state = end_state;
        s.state_reason = reason;
        s.process = None;
        if last_error.is_some() {
            s.last_error = last_error;
        }
    });
}

fn end_reason(spec: &WatchSpec, end: &WatchEnd) -> String {
    let taken = format!("{} of {} dumps taken", end.dumps, spec.count);
    match end.reason {
        EndReason::CountReached => taken,
        EndReason::TargetEnded { pid, how } => format!("pid {pid} {how}; {taken}"),
        EndReason::TimeUp => format!(
            "watched for {} s; {taken}",
            spec.duration.unwrap_or_default().as_secs_f64()
        ),
        EndReason::Interrupted => format!("stopped with the server; {taken}"),
    }
}

/// Records what the watcher reports; a dump taken returns its upload's task.
fn on_event(
    running: &Arc<Running>,
    state: &AppState,
    runtime: &tokio::runtime::Handle,
    event: &WatchEvent<'_>,
) -> Option<tokio::task::JoinHandle<()>> {
    let rule = &running.rule;
    match event {
        WatchEvent::Waiting { name } => {
            running.update(|s| {
                s.state_reason = format!("waiting for a process named {name}");
                s.process = None;
            });
            None
        }
        WatchEvent::Watching { pid, name, traced } => {
            tracing::info!(rule = rule.name, pid, process = name, traced, "watching");
            running.update(|s| {
                s.state_reason = format!(
                    "watching pid {pid} ({name}){}",
                    if *traced { ", traced" } else { "" }
                );
                s.process = Some(OperationProcess {
                    pid: *pid,
                    name: (*name).to_owned(),
                });
            });
            None
        }
        WatchEvent::Skipped {
            pid,
            fired,
            since_last,
        } => {
            tracing::info!(
                rule = rule.name,
                pid,
                "{fired}: no dump, the last one was {:.1} s ago",
                since_last.as_secs_f64()
            );
            None
        }
        WatchEvent::Ended { pid, how } => {
            tracing::info!(rule = rule.name, pid, "the watched process {how}");
            running.update(|s| {
                s.state_reason = format!("pid {pid} {how}");
                s.process = None;
            });
            None
        }
        WatchEvent::DumpFailed {
            pid, fired, error, ..
        } => {
            let (id, _) = start_operation(running, state, *pid, "", fired, Instant::now());
            let failed = OperationError {
                code: error.name().to_owned(),
                message: format!("{fired}: {error}"),
            };
            running.update(|s| {
                s.last_operation_id = Some(id);
                s.last_error = Some(failed.clone());
            });
            dump::finish(
                state,
                id,
                Instant::now(),
                Completion::new(OperationStatus::Failed, Some(failed)),
                None,
            );
            None
        }
        WatchEvent::Dumped {
            pid,
            fired,
            number,
            count,
            report,
        } => {
            let started = Instant::now()
                .checked_sub(report.elapsed)
                .unwrap_or_else(Instant::now);
            let (id, cancel) = start_operation(running, state, *pid, &report.name, fired, started);
            tracing::info!(
                rule = rule.name,
                operation = %id,
                pid,
                "{fired}: dump {number} of {count} taken, uploading to {}",
                rule.egress
            );
            running.update(|s| {
                s.dumps_taken += 1;
                s.last_operation_id = Some(id);
                s.last_dump_time = Some(now_rfc3339());
            });
            let Some(provider) = state.egress.get(&rule.egress).cloned() else {
                // Checked at start; the providers never change.
                let _ = std::fs::remove_file(&report.path);
                return None;
            };
            let upload = Upload {
                state: state.clone(),
                running: running.clone(),
                provider,
                id,
                cancel,
                started,
                report: (*report).clone(),
                metadata: DumpMetadata {
                    operation_id: id.to_string(),
                    pid: *pid,
                    process_name: report.name.clone(),
                    mode: report.mode.as_str().to_owned(),
                    format: report.format.as_str().to_owned(),
                    tags: tags(rule, fired),
                },
            };
            Some(runtime.spawn(upload.run()))
        }
    }
}

fn tags(rule: &Rule, fired: &Fired) -> Vec<String> {
    let mut tags = rule.tags.clone();
    tags.push(format!("trigger:{}", fired.tag()));
    tags
}

/// A `Running` operation for a dump of this rule; its cancel flag stops the upload.
fn start_operation(
    running: &Running,
    state: &AppState,
    pid: i32,
    name: &str,
    fired: &Fired,
    started: Instant,
) -> (Uuid, Cancel) {
    let rule = &running.rule;
    let id = Uuid::new_v4();
    let cancel = Cancel::new();
    let created =
        chrono::Utc::now() - chrono::Duration::from_std(started.elapsed()).unwrap_or_default();
    state.operations.start(
        Operation {
            operation_id: id,
            created_date_time: created.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            status: OperationStatus::Running,
            is_stoppable: true,
            process: OperationProcess {
                pid,
                name: name.to_owned(),
            },
            egress_provider_name: Some(rule.egress.clone()),
            resource_location: None,
            resource_bytes: None,
            resource_sha256: None,
            tags: tags(rule, fired),
            error: None,
            dump_type: rule.dump_type.as_str().to_owned(),
            format: rule.spec.dump.format.as_str().to_owned(),
        },
        cancel.clone(),
    );
    (id, cancel)
}

/// A dump file on its way to the egress provider.
struct Upload {
    state: AppState,
    running: Arc<Running>,
    provider: Arc<EgressProvider>,
    id: Uuid,
    /// The operation's: `DELETE /operations/{id}`.
    cancel: Cancel,
    started: Instant,
    report: DumpReport,
    metadata: DumpMetadata,
}

/// `name.core` → (`name`, `core`), the extension being the format's.
fn split_name(path: &Path, format: Format) -> (String, String) {
    let file = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let ext = format.extension();
    match file.strip_suffix(&format!(".{ext}")) {
        Some(stem) => (stem.to_owned(), ext.to_owned()),
        None => match file.rsplit_once('.') {
            Some((stem, ext)) => (stem.to_owned(), ext.to_owned()),
            None => (file, ext.to_owned()),
        },
    }
}

impl Upload {
    async fn run(self) {
        let completion = self.send().await;
        if let Err(e) = tokio::fs::remove_file(&self.report.path).await {
            tracing::warn!(
                "cannot remove the rule's dump {}: {e}",
                self.report.path.display()
            );
        }
        self.running.update(|s| match completion.status {
            OperationStatus::Succeeded => s.dumps_stored += 1,
            _ => s.last_error = completion.error.clone(),
        });
        dump::finish(
            &self.state,
            self.id,
            self.started,
            completion,
            Some(&self.report),
        );
    }

    fn cancelled(&self) -> bool {
        self.running.cancel.is_cancelled() || self.cancel.is_cancelled()
    }

    async fn send(&self) -> Completion {
        let provider = &self.provider;
        let (stem, ext) = split_name(&self.report.path, self.report.format);
        let object = provider.unique_name(&stem, &ext).await;
        let mut upload = match provider.begin(&object, &self.metadata).await {
            Ok(upload) => upload,
            Err(e) => return dump::egress_failed(provider, &e),
        };
        let io_failed = |e: std::io::Error| {
            Completion::new(
                OperationStatus::Failed,
                error(
                    "io",
                    format!("cannot read the dump {}: {e}", self.report.path.display()),
                ),
            )
        };
        let mut file = match tokio::fs::File::open(&self.report.path).await {
            Ok(file) => file,
            Err(e) => {
                upload.abort().await;
                return io_failed(e);
            }
        };
        let mut digest = Digest::default();
        loop {
            if self.cancelled() {
                upload.abort().await;
                return Completion::new(
                    OperationStatus::Cancelled,
                    error(
                        "cancelled",
                        "the upload was cancelled; nothing was kept".into(),
                    ),
                );
            }
            let mut buffer = BytesMut::with_capacity(CHUNK);
            while buffer.len() < CHUNK {
                match file.read_buf(&mut buffer).await {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) => {
                        upload.abort().await;
                        return io_failed(e);
                    }
                }
            }
            if buffer.is_empty() {
                break;
            }
            let chunk = buffer.freeze();
            digest.update(&chunk);
            if let Err(e) = upload.put(chunk).await {
                upload.abort().await;
                return dump::egress_failed(provider, &e);
            }
        }
        match upload.finish().await {
            Ok(_) => {
                let (bytes, sha256) = digest.finish();
                let mut completion = Completion::new(OperationStatus::Succeeded, None);
                completion.resource_location = Some(provider.resource_location(&object));
                completion.bytes = Some(bytes);
                completion.sha256 = Some(sha256);
                completion
            }
            Err(e) => dump::egress_failed(provider, &e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, ProcessConfig, TriggersConfig};

    fn config(triggers: TriggersConfig) -> RuleConfig {
        RuleConfig {
            process: ProcessConfig {
                pid: Some(42),
                name: None,
            },
            triggers,
            dump_type: None,
            format: None,
            egress: "dumps".into(),
            count: None,
            spacing: None,
            poll: None,
            duration: None,
            tags: vec![],
        }
    }

    fn check(config: &RuleConfig) -> Result<Rule, RuleError> {
        Rule::new("r", config, |name| name == "dumps")
    }

    #[test]
    fn the_documented_rule_parses() {
        let text = r#"
            [collection_rules.high-cpu]
            process = { name = "myservice" }
            triggers = { cpu_above = 90, mem_above = "2GiB", threads_above = 500, fds_above = 1000, signal = ["SIGUSR1", 12], on_crash = true, on_exit = false }
            type = "Mini"
            format = "minidump"
            egress = "dumps"
            count = 3
            spacing = "30s"
            poll = "500ms"
            duration = "8h"
            tags = ["incident-42"]
        "#;
        let parsed = Config::parse(text, Path::new("x.toml")).unwrap();
        let rule = Rule::new("high-cpu", &parsed.collection_rules["high-cpu"], |n| {
            n == "dumps"
        })
        .unwrap();
        assert_eq!(
            rule.spec.target,
            WatchTarget::Name {
                name: "myservice".into(),
                wait: true
            }
        );
        let t = &rule.spec.triggers;
        assert_eq!(t.cpu_above, Some(90.0));
        assert_eq!(t.mem_above, Some(2 << 30));
        assert_eq!((t.threads, t.fds), (Some(500), Some(1000)));
        assert_eq!(t.signals, vec![10, 12]);
        assert!(t.on_crash && !t.on_exit);
        assert_eq!(rule.dump_type, DumpType::Mini);
        assert_eq!(rule.spec.dump.format, Format::Minidump);
        assert_eq!(rule.spec.count, 3);
        assert_eq!(rule.spec.spacing, Duration::from_secs(30));
        assert_eq!(rule.spec.poll, Duration::from_millis(500));
        assert_eq!(rule.spec.duration, Some(Duration::from_secs(8 * 3600)));
        assert_eq!(rule.tags, vec!["rule:high-cpu", "incident-42"]);
    }

    #[test]
    fn every_is_a_timer() {
        let rule = check(&config(TriggersConfig {
            every: Some(DurationValue::Text("10m".into())),
            ..TriggersConfig::default()
        }))
        .unwrap();
        assert!(rule.spec.triggers.is_empty());
        assert_eq!(rule.spec.spacing, Duration::from_secs(600));
        assert_eq!(rule.dump_type, DumpType::WithHeap);
        let list = CollectionRules::new(vec![rule]).list();
        assert_eq!(list[0].triggers, "every 600 s");
        assert_eq!(list[0].state, RuleState::Running);
    }

    #[test]
    fn bad_rules_say_what_is_wrong() {
        let cpu = TriggersConfig {
            cpu_above: Some(90.0),
            ..TriggersConfig::default()
        };
        let reason = |c: RuleConfig| check(&c).unwrap_err().reason;
        let mut c = config(cpu.clone());
        c.egress = "nowhere".into();
        assert!(reason(c).contains("no egress provider named \"nowhere\""));
        assert!(reason(config(TriggersConfig::default())).starts_with("no triggers"));
        let mut c = config(TriggersConfig {
            signal: vec![SignalValue::Name("SIGNOPE".into())],
            ..TriggersConfig::default()
        });
        assert!(reason(c.clone()).starts_with("triggers.signal"));
        c.triggers.signal = vec![SignalValue::Name("KILL".into())];
        assert!(reason(c).contains("SIGKILL"));
        let mut c = config(cpu.clone());
        c.triggers.every = Some(DurationValue::Seconds(5.0));
        assert!(reason(c).contains("every"));
        let mut c = config(cpu.clone());
        c.triggers.cpu_above = Some(-1.0);
        assert!(reason(c).contains("cpu_above"));
        let mut c = config(cpu.clone());
        c.triggers.mem_above = Some(SizeValue::Text("lots".into()));
        assert!(reason(c).contains("mem_above"));
        let mut c = config(cpu.clone());
        c.count = Some(0);
        assert!(reason(c).contains("count"));
        let mut c = config(cpu.clone());
        c.spacing = Some(DurationValue::Text("soon".into()));
        assert!(reason(c).contains("spacing"));
        let mut c = config(cpu.clone());
        c.dump_type = Some("Huge".into());
        assert!(reason(c).contains("unknown dump type"));
        let mut c = config(cpu.clone());
        c.process = ProcessConfig {
            pid: Some(1),
            name: Some("x".into()),
        };
        assert!(reason(c).starts_with("process must be"));
        let mut c = config(cpu.clone());
        c.tags = vec!["a,b".into()];
        assert!(reason(c).starts_with("tag"));
        let err = Rule::new("bad name", &config(cpu), |_| true).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("collection rule \"bad name\": ")
        );
    }

    #[test]
    fn values() {
        assert_eq!(parse_size(&SizeValue::Bytes(7)).unwrap(), 7);
        for (text, bytes) in [("2GiB", 2u64 << 30), ("512M", 512 << 20), ("1.5 KiB", 1536)] {
            assert_eq!(parse_size(&SizeValue::Text(text.into())).unwrap(), bytes);
        }
        assert!(parse_size(&SizeValue::Text("2X".into())).is_err());
        for (text, d) in [
            ("500ms", Duration::from_millis(500)),
            ("30s", Duration::from_secs(30)),
            ("10m", Duration::from_secs(600)),
            ("1h", Duration::from_secs(3600)),
            ("2", Duration::from_secs(2)),
        ] {
            assert_eq!(
                parse_duration(&DurationValue::Text(text.into())).unwrap(),
                d
            );
        }
        assert_eq!(
            parse_duration(&DurationValue::Seconds(1.5)).unwrap(),
            Duration::from_millis(1500)
        );
        assert!(parse_duration(&DurationValue::Seconds(-1.0)).is_err());
        assert!(parse_duration(&DurationValue::Text("5 fortnights".into())).is_err());
        assert_eq!(
            split_name(Path::new("/t/a_1_2_cpu.core"), Format::Elf),
            ("a_1_2_cpu".into(), "core".into())
        );
    }
}
