//! `GET /dump`: one dump, streamed in the response (200) or uploaded to an egress provider
//! (202).
//!
//! The engine writes on one blocking thread ([`tokio::task::spawn_blocking`]: every ptrace
//! request must come from the thread that attached) into a [`ChannelWriter`], which hands
//! 1 MiB chunks through a channel of a few slots to the response body or to the multipart
//! upload. A slow reader slows the writer; memory stays flat.
//!
//! The response starts only once the first chunk exists, so whatever fails while the target is
//! being stopped and read (permission, a tracer already attached, the process gone) is still a
//! proper problem response. After that a failure can only abort the chunked body.
//!
//! Heap and Full dumps are written from a copy-on-write snapshot (the engine's default), so the
//! target runs on while a slow client reads; Mini and Triage dumps, and snapshots the kernel
//! refuses, hold the target stopped until the last byte is handed over, so a slow reader holds
//! it longer. Cancel with `DELETE /operations/{id}`.

use std::io::{self, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use sha2::{Digest as _, Sha256};
use snapdump::{Cancel, DumpReport, DumpRequest, Format, TargetSpec};
use tokio::sync::{OwnedSemaphorePermit, mpsc, oneshot};
use uuid::Uuid;

use crate::AppState;
use crate::egress::{DumpMetadata, EgressProvider};
use crate::operations::{Completion, Operation, OperationError, OperationProcess, OperationStatus};
use crate::problem::Problem;
use crate::routes::{self, Params};

/// Bytes per chunk handed from the engine to the body or upload.
const CHUNK: usize = 1 << 20;
/// Chunks queued between the engine and the network.
const QUEUED_CHUNKS: usize = 4;

/// dotnet-monitor's dump types are the engine's: the same four names, mode and redaction.
pub use snapdump::dotnet::DumpType;

/// A `type=` parameter (any case; absent: WithHeap, as dotnet-monitor).
pub fn parse_dump_type(text: Option<&str>) -> Result<DumpType, Problem> {
    match text {
        None => Ok(DumpType::WithHeap),
        Some(text) => text.parse().map_err(|message: String| {
            Problem::bad_request("bad_type", format!("{message} (WithHeap is the default)"))
        }),
    }
}

pub(crate) fn parse_format(text: Option<&str>) -> Result<Format, Problem> {
    match text {
        None => Ok(Format::Elf),
        Some(text) => match text.to_ascii_lowercase().as_str() {
            "elf" => Ok(Format::Elf),
            "minidump" => Ok(Format::Minidump),
            _ => Err(Problem::bad_request(
                "bad_format",
                format!("unknown format {text:?}: use elf (the default) or minidump"),
            )),
        },
    }
}

/// A `Write` that sends chunks into a channel from a blocking thread. When the receiver is
/// gone (the client hung up, the upload failed) writes fail with `BrokenPipe` and the engine
/// stops, releasing the target.
pub struct ChannelWriter {
    tx: mpsc::Sender<Result<Bytes, io::Error>>,
    buffer: BytesMut,
    receiver_gone: Arc<AtomicBool>,
}

impl ChannelWriter {
    pub fn new(tx: mpsc::Sender<Result<Bytes, io::Error>>) -> ChannelWriter {
        ChannelWriter {
            tx,
            buffer: BytesMut::with_capacity(CHUNK),
            receiver_gone: Arc::default(),
        }
    }

    /// Set once a send found the receiver gone.
    pub fn receiver_gone(&self) -> Arc<AtomicBool> {
        self.receiver_gone.clone()
    }

    fn send_buffer(&mut self) -> io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = self.buffer.split().freeze();
        self.buffer.reserve(CHUNK);
        self.tx.blocking_send(Ok(chunk)).map_err(|_| {
            self.receiver_gone.store(true, Ordering::SeqCst);
            io::Error::new(io::ErrorKind::BrokenPipe, "the dump's reader went away")
        })
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = CHUNK - self.buffer.len().min(CHUNK);
        let n = data.len().min(room.max(1));
        self.buffer.extend_from_slice(&data[..n]);
        if self.buffer.len() >= CHUNK {
            self.send_buffer()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send_buffer()
    }
}

/// How a dump ended, for the operation and the metrics.
fn outcome(
    result: &Result<Result<DumpReport, snapdump::Error>, tokio::task::JoinError>,
    receiver_gone: bool,
) -> (OperationStatus, Option<OperationError>) {
    let error = |code: &str, message: String| {
        Some(OperationError {
            code: code.to_owned(),
            message,
        })
    };
    match result {
        Ok(Ok(_)) => (OperationStatus::Succeeded, None),
        Ok(Err(snapdump::Error::Interrupted)) => (
            OperationStatus::Cancelled,
            error(
                "cancelled",
                "the dump was cancelled; the target was released and nothing was kept".into(),
            ),
        ),
        Ok(Err(_)) if receiver_gone => (
            OperationStatus::Cancelled,
            error(
                "client_disconnected",
                "the client closed the connection before the dump was complete".into(),
            ),
        ),
        Ok(Err(e)) => (OperationStatus::Failed, error(e.name(), e.to_string())),
        Err(e) => {
            tracing::error!("dump task failed: {e}");
            (
                OperationStatus::Failed,
                error(
                    "internal",
                    "the dump task failed; see the server's log".into(),
                ),
            )
        }
    }
}

/// File names in headers: letters, digits, `.`, `_` and `-` only.
fn header_safe(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Everything a dump needs once the request has been validated.
struct Job {
    state: AppState,
    id: Uuid,
    request: DumpRequest,
    target: routes::Selected,
    /// `<comm>_<pid>_<date>` and the extension.
    stem: String,
    ext: &'static str,
    permit: OwnedSemaphorePermit,
    started: Instant,
}

pub async fn get_dump(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Response, Problem> {
    let params = Params::parse(
        query.as_deref(),
        &[
            "pid",
            "uid",
            "name",
            "type",
            "format",
            "egressprovider",
            "tags",
        ],
    )?;
    let dump_type = parse_dump_type(params.get("type"))?;
    let format = parse_format(params.get("format"))?;
    let tags = routes::parse_tags(params.get("tags"))?;
    let egress = match params.get("egressprovider") {
        None => None,
        Some(name) => Some(state.egress.get(name).cloned().ok_or_else(|| {
            Problem::bad_request(
                "unknown_egress_provider",
                format!(
                    "no egress provider named {name:?}; configured: {}",
                    if state.egress.is_empty() {
                        "none".to_owned()
                    } else {
                        state.egress.keys().cloned().collect::<Vec<_>>().join(", ")
                    }
                ),
            )
        })?),
    };
    let selector = routes::Selector::from_params(&params);
    let ids = state.runtime_ids.clone();
    let target = routes::blocking(move || routes::select(&selector, &ids, true)).await??;

    let permit = state
        .dump_permits
        .clone()
        .try_acquire_owned()
        .map_err(|_| {
            state.metrics.record_rejected();
            Problem::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_dumps",
                format!(
                    "{} dump(s) already under way, the most this server takes at once; \
                 try again when one has finished",
                    state.max_concurrent_dumps
                ),
            )
        })?;

    let id = Uuid::new_v4();
    let cancel = Cancel::new();
    state.operations.start(
        Operation {
            operation_id: id,
            created_date_time: chrono::Utc::now()
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            status: OperationStatus::Running,
            is_stoppable: true,
            process: OperationProcess {
                pid: target.pid,
                name: target.name.clone(),
            },
            egress_provider_name: egress.as_ref().map(|p| p.name.clone()),
            resource_location: None,
            resource_bytes: None,
            resource_sha256: None,
            tags: tags.clone(),
            error: None,
            dump_type: dump_type.as_str().to_owned(),
            format: format.as_str().to_owned(),
        },
        cancel.clone(),
    );
    tracing::info!(
        operation = %id,
        pid = target.pid,
        process = target.name,
        r#type = dump_type.as_str(),
        format = format.as_str(),
        egress = egress.as_ref().map(|p| p.name.as_str()),
        "dump started"
    );
    let mut request = DumpRequest::new(TargetSpec::Pid(target.pid))
        .mode(dump_type.mode())
        .redact(dump_type.redacts())
        .format(format)
        .cancel(cancel);
    request.guardian = state.snapshot_guardian.clone();
    let job = Job {
        stem: snapdump::naming::default_stem(
            &target.comm,
            target.pid,
            std::time::SystemTime::now(),
        ),
        ext: format.extension(),
        state,
        id,
        request,
        target,
        permit,
        started: Instant::now(),
    };
    let location = HeaderValue::from_str(&format!("/operations/{id}")).expect("ASCII");
    match egress {
        None => stream(job, location).await,
        Some(provider) => {
            let metadata = DumpMetadata {
                operation_id: id.to_string(),
                pid: job.target.pid,
                process_name: job.target.name.clone(),
                mode: dump_type.mode().as_str().to_owned(),
                format: format.as_str().to_owned(),
                tags,
            };
            tokio::spawn(upload(job, provider, metadata));
            Ok((StatusCode::ACCEPTED, [(header::LOCATION, location)]).into_response())
        }
    }
}

/// The size and SHA-256 of the bytes that went out, computed on the async side (never on
/// the engine's thread, which holds the target stopped).
#[derive(Default)]
pub(crate) struct Digest {
    hasher: Sha256,
    bytes: u64,
}

impl Digest {
    pub(crate) fn update(&mut self, chunk: &[u8]) {
        self.hasher.update(chunk);
        self.bytes += chunk.len() as u64;
    }

    pub(crate) fn finish(self) -> (u64, String) {
        (self.bytes, hex::encode(self.hasher.finalize()))
    }
}

/// Records the end of a dump: operation, metrics, log.
pub(crate) fn finish(
    state: &AppState,
    id: Uuid,
    started: Instant,
    completion: Completion,
    report: Option<&DumpReport>,
) {
    let pause = report.map_or(Default::default(), |r| r.pause.total);
    if let Some(reason) = report.and_then(|r| r.snapshot_refused.as_deref()) {
        tracing::warn!(operation = %id, "no snapshot ({reason}): the target was stopped for the whole dump");
    }
    let bytes = completion.bytes.unwrap_or(0);
    state
        .metrics
        .record(completion.status, bytes, pause, started.elapsed());
    match &completion.error {
        None => tracing::info!(
            operation = %id,
            status = ?completion.status,
            bytes,
            pause_ms = pause.as_millis() as u64,
            "dump finished"
        ),
        Some(e) => tracing::warn!(
            operation = %id,
            status = ?completion.status,
            code = e.code,
            "dump ended: {}",
            e.message
        ),
    }
    state.operations.finish(id, completion);
}

/// 200: the dump in the response body.
async fn stream(job: Job, location: HeaderValue) -> Result<Response, Problem> {
    let Job {
        state,
        id,
        request,
        stem,
        ext,
        permit,
        started,
        ..
    } = job;
    let (tx, mut rx) = mpsc::channel(QUEUED_CHUNKS);
    let writer = ChannelWriter::new(tx.clone());
    let receiver_gone = writer.receiver_gone();
    let task = tokio::task::spawn_blocking(move || {
        let result = snapdump::dump::dump_to_stream(&request, Box::new(writer));
        if let Err(e) = &result {
            // Ends the body with an error: the client sees a broken transfer, not a short dump.
            let _ = tx.blocking_send(Err(io::Error::other(e.to_string())));
        }
        result
    });
    // The body reports the digest once it has handed out the last byte.
    let (digest_tx, digest_rx) = oneshot::channel::<(u64, String)>();
    let (first_error_tx, first_error_rx) = oneshot::channel();
    tokio::spawn(async move {
        let result = task.await;
        let (status, error) = outcome(&result, receiver_gone.load(Ordering::SeqCst));
        let mut completion = Completion::new(status, error);
        if status == OperationStatus::Succeeded {
            match digest_rx.await {
                Ok((bytes, sha256)) => {
                    completion.bytes = Some(bytes);
                    completion.sha256 = Some(sha256);
                }
                Err(_) => {
                    completion = Completion::new(
                        OperationStatus::Cancelled,
                        Some(OperationError {
                            code: "client_disconnected".into(),
                            message: "the client closed the connection before the dump was \
                                      complete"
                                .into(),
                        }),
                    )
                }
            }
        }
        let report = result.as_ref().ok().and_then(|r| r.as_ref().ok());
        finish(&state, id, started, completion, report);
        drop(permit);
        let problem = match &result {
            Ok(Err(snapdump::Error::Interrupted)) => Some(Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "cancelled",
                "the dump was cancelled (DELETE /operations/{id}, or the server is stopping) \
                 before its first byte; the target was released",
            )),
            Ok(Err(e)) => Some(Problem::from_engine(e)),
            Ok(Ok(_)) => None,
            Err(e) => Some(Problem::internal(e)),
        };
        let _ = first_error_tx.send(problem);
    });

    let first = match rx.recv().await {
        Some(Ok(chunk)) => chunk,
        _ => {
            // Nothing was written: the failure is still the request's answer.
            return match first_error_rx.await {
                Ok(Some(problem)) => Err(problem),
                _ => Ok((StatusCode::OK, [(header::LOCATION, location)]).into_response()),
            };
        }
    };
    let mut digest = Digest::default();
    digest.update(&first);
    let rest = futures::stream::unfold(
        (rx, Some(digest), Some(digest_tx)),
        |(mut rx, mut digest, mut digest_tx)| async move {
            match rx.recv().await {
                Some(Ok(chunk)) => {
                    if let Some(d) = digest.as_mut() {
                        d.update(&chunk);
                    }
                    Some((Ok(chunk), (rx, digest, digest_tx)))
                }
                Some(Err(e)) => Some((Err(e), (rx, None, None))),
                None => {
                    if let (Some(d), Some(tx)) = (digest.take(), digest_tx.take()) {
                        let _ = tx.send(d.finish());
                    }
                    None
                }
            }
        },
    );
    let body = Body::from_stream(futures::StreamExt::chain(
        futures::stream::once(async move { Ok::<_, io::Error>(first) }),
        rest,
    ));
    let disposition = format!("attachment; filename=\"{}.{ext}\"", header_safe(&stem));
    Ok((
        StatusCode::OK,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            ),
            (
                header::CONTENT_DISPOSITION,
                HeaderValue::from_str(&disposition).expect("header-safe"),
            ),
            (header::LOCATION, location),
        ],
        body,
    )
        .into_response())
}

pub(crate) fn egress_failed(provider: &EgressProvider, e: &object_store::Error) -> Completion {
    Completion::new(
        OperationStatus::Failed,
        Some(OperationError {
            code: "egress_failed".into(),
            message: format!("egress provider {}: {e}", provider.name),
        }),
    )
}

/// 202's background half: the dump into a multipart upload.
async fn upload(job: Job, provider: Arc<EgressProvider>, metadata: DumpMetadata) {
    let Job {
        state,
        id,
        request,
        stem,
        ext,
        permit,
        started,
        ..
    } = job;
    let object = provider.unique_name(&stem, ext).await;
    let mut upload = match provider.begin(&object, &metadata).await {
        Ok(upload) => upload,
        Err(e) => {
            finish(&state, id, started, egress_failed(&provider, &e), None);
            return;
        }
    };
    let (tx, mut rx) = mpsc::channel(QUEUED_CHUNKS);
    let writer = ChannelWriter::new(tx);
    let cancel = request.cancel.clone();
    let task = tokio::task::spawn_blocking(move || {
        snapdump::dump::dump_to_stream(&request, Box::new(writer))
    });
    let mut digest = Digest::default();
    let mut upload_error = None;
    while let Some(item) = rx.recv().await {
        let Ok(chunk) = item else { continue };
        digest.update(&chunk);
        if let Err(e) = upload.put(chunk).await {
            upload_error = Some(e);
            cancel.cancel();
            break;
        }
    }
    // A failed upload closes the channel: the engine stops at its next chunk.
    drop(rx);
    let result = task.await;
    let report = result.as_ref().ok().and_then(|r| r.as_ref().ok()).cloned();
    let (status, error) = outcome(&result, false);
    let mut completion = Completion::new(status, error);
    if status == OperationStatus::Succeeded && upload_error.is_none() {
        match upload.finish().await {
            Ok(_) => {
                let (bytes, sha256) = digest.finish();
                completion.resource_location = Some(provider.resource_location(&object));
                completion.bytes = Some(bytes);
                completion.sha256 = Some(sha256);
            }
            Err(e) => upload_error = Some(e),
        }
    } else {
        upload.abort().await;
    }
    if let Some(e) = upload_error {
        completion = egress_failed(&provider, &e);
    }
    finish(&state, id, started, completion, report.as_ref());
    drop(permit);
}

#[cfg(test)]
mod tests {
    use super::*;
    use snapdump::Mode;

    #[test]
    fn dump_types() {
        assert_eq!(parse_dump_type(None).unwrap(), DumpType::WithHeap);
        assert_eq!(parse_dump_type(Some("full")).unwrap().mode(), Mode::Full);
        let triage = parse_dump_type(Some("Triage")).unwrap();
        assert_eq!(triage.mode(), Mode::Mini);
        assert!(triage.redacts() && !DumpType::Mini.redacts());
        assert_eq!(parse_dump_type(Some("Huge")).unwrap_err().code, "bad_type");
        assert_eq!(parse_format(Some("MINIDUMP")).unwrap(), Format::Minidump);
        assert_eq!(parse_format(Some("pdf")).unwrap_err().code, "bad_format");
    }

    #[test]
    fn channel_writer_chunks_and_notices_a_gone_reader() {
        let (tx, mut rx) = mpsc::channel(16);
        let mut w = ChannelWriter::new(tx);
        w.write_all(&vec![7u8; CHUNK + 10]).unwrap();
        w.flush().unwrap();
        let a = rx.try_recv().unwrap().unwrap();
        let b = rx.try_recv().unwrap().unwrap();
        assert_eq!((a.len(), b.len()), (CHUNK, 10));
        drop(rx);
        w.write_all(b"x").unwrap();
        assert_eq!(w.flush().unwrap_err().kind(), io::ErrorKind::BrokenPipe);
        assert!(w.receiver_gone().load(Ordering::SeqCst));
    }

    #[test]
    fn header_names() {
        assert_eq!(header_safe("a b\"c_1.core"), "a_b_c_1.core");
    }
}
