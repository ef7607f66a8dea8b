//! Operations: one per `/dump` request, as dotnet-monitor's `/operations` shows them.
//!
//! An operation is `Running` from the request until the dump is streamed or uploaded, then
//! `Succeeded`, `Failed` (with an error code and message) or `Cancelled` (by
//! `DELETE /operations/{id}`, by the client going away, or by shutdown).

use std::collections::HashMap;
use std::sync::Mutex;

use serde::Serialize;
use snapdump::Cancel;
use uuid::Uuid;

/// Finished operations kept for `GET /operations`; older ones are forgotten.
const KEEP_FINISHED: usize = 500;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum OperationStatus {
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

/// The process an operation dumps.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct OperationProcess {
    pub pid: i32,
    pub name: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct OperationError {
    pub code: String,
    pub message: String,
}

/// An operation as `GET /operations/{id}` returns it.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Operation {
    pub operation_id: Uuid,
    /// RFC 3339, UTC.
    pub created_date_time: String,
    pub status: OperationStatus,
    pub is_stoppable: bool,
    pub process: OperationProcess,
    /// `null` for a dump streamed in the response.
    pub egress_provider_name: Option<String>,
    /// Where the dump went: a file path or an `s3://`/`az://` URL, once it succeeded.
    pub resource_location: Option<String>,
    /// The dump's size in bytes and its SHA-256 (hex), as sent, once it succeeded.
    pub resource_bytes: Option<u64>,
    pub resource_sha256: Option<String>,
    pub tags: Vec<String>,
    pub error: Option<OperationError>,
    /// Dump type and format, e.g. `WithHeap`, `elf`.
    #[serde(rename = "type")]
    pub dump_type: String,
    pub format: String,
}

struct Entry {
    operation: Operation,
    cancel: Cancel,
    seq: u64,
}

/// All operations of this server.
#[derive(Default)]
pub struct Operations {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<Uuid, Entry>,
    next_seq: u64,
}

/// How an operation ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Completion {
    pub status: OperationStatus,
    pub error: Option<OperationError>,
    pub resource_location: Option<String>,
    pub bytes: Option<u64>,
    pub sha256: Option<String>,
}

impl Completion {
    pub fn new(status: OperationStatus, error: Option<OperationError>) -> Completion {
        Completion {
            status,
            error,
            resource_location: None,
            bytes: None,
            sha256: None,
        }
    }
}

/// What [`Operations::cancel`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum CancelOutcome {
    Cancelling,
    NotRunning(OperationStatus),
    Unknown,
}

impl Operations {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a new running operation.
    pub fn start(&self, operation: Operation, cancel: Cancel) {
        let mut inner = self.lock();
        let seq = inner.next_seq;
        inner.next_seq += 1;
        inner.entries.insert(
            operation.operation_id,
            Entry {
                operation,
                cancel,
                seq,
            },
        );
        inner.forget_old();
    }

    /// Marks an operation finished.
    pub fn finish(&self, id: Uuid, completion: Completion) {
        let mut inner = self.lock();
        if let Some(entry) = inner.entries.get_mut(&id) {
            let op = &mut entry.operation;
            op.status = completion.status;
            op.is_stoppable = false;
            op.resource_location = completion.resource_location;
            op.resource_bytes = completion.bytes;
            op.resource_sha256 = completion.sha256;
            op.error = completion.error;
        }
        inner.forget_old();
    }

    pub fn get(&self, id: Uuid) -> Option<Operation> {
        self.lock().entries.get(&id).map(|e| e.operation.clone())
    }

    /// Operations carrying every tag in `tags`, oldest first.
    pub fn list(&self, tags: &[String]) -> Vec<Operation> {
        let inner = self.lock();
        let mut entries: Vec<&Entry> = inner
            .entries
            .values()
            .filter(|e| tags.iter().all(|t| e.operation.tags.contains(t)))
            .collect();
        entries.sort_by_key(|e| e.seq);
        entries.iter().map(|e| e.operation.clone()).collect()
    }

    /// Asks a running operation to stop; it turns `Cancelled` once the target is released and
    /// any partial upload removed.
    pub fn cancel(&self, id: Uuid) -> CancelOutcome {
        let inner = self.lock();
        match inner.entries.get(&id) {
            None => CancelOutcome::Unknown,
            Some(e) if e.operation.status != OperationStatus::Running => {
                CancelOutcome::NotRunning(e.operation.status)
            }
            Some(e) => {
                e.cancel.cancel();
                CancelOutcome::Cancelling
            }
        }
    }

    /// Cancels everything still running (at shutdown); returns how many.
    pub fn cancel_all(&self) -> usize {
        let inner = self.lock();
        inner
            .entries
            .values()
            .filter(|e| e.operation.status == OperationStatus::Running)
            .inspect(|e| e.cancel.cancel())
            .count()
    }

    pub fn running(&self) -> usize {
        self.lock()
            .entries
            .values()
            .filter(|e| e.operation.status == OperationStatus::Running)
            .count()
    }
}

impl Inner {
    fn forget_old(&mut self) {
        let finished = self
            .entries
            .values()
            .filter(|e| e.operation.status != OperationStatus::Running)
            .count();
        if finished <= KEEP_FINISHED {
            return;
        }
        let mut old: Vec<(u64, Uuid)> = self
            .entries
            .values()
            .filter(|e| e.operation.status != OperationStatus::Running)
            .map(|e| (e.seq, e.operation.operation_id))
            .collect();
        old.sort_unstable();
        for (_, id) in old.iter().take(finished - KEEP_FINISHED) {
            self.entries.remove(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn operation(tags: &[&str]) -> Operation {
        Operation {
            operation_id: Uuid::new_v4(),
            created_date_time: String::new(),
            status: OperationStatus::Running,
            is_stoppable: true,
            process: OperationProcess {
                pid: 1,
                name: "x".into(),
            },
            egress_provider_name: None,
            resource_location: None,
            resource_bytes: None,
            resource_sha256: None,
            tags: tags.iter().map(|t| t.to_string()).collect(),
            error: None,
            dump_type: "Mini".into(),
            format: "elf".into(),
        }
    }

    #[test]
    fn lifecycle_and_filters() {
        let ops = Operations::default();
        let a = operation(&["a", "b"]);
        let b = operation(&["b"]);
        let (ida, idb) = (a.operation_id, b.operation_id);
        let cancel = Cancel::new();
        ops.start(a, cancel.clone());
        ops.start(b, Cancel::new());
        assert_eq!(ops.list(&[]).len(), 2);
        assert_eq!(ops.list(&["a".into()]).len(), 1);
        assert_eq!(ops.list(&["b".into()])[0].operation_id, ida);
        assert_eq!(ops.cancel(ida), CancelOutcome::Cancelling);
        assert!(cancel.is_cancelled());
        ops.finish(idb, Completion::new(OperationStatus::Succeeded, None));
        assert_eq!(
            ops.cancel(idb),
            CancelOutcome::NotRunning(OperationStatus::Succeeded)
        );
        assert_eq!(ops.cancel(Uuid::new_v4()), CancelOutcome::Unknown);
        assert_eq!(ops.running(), 1);
    }

    #[test]
    fn old_finished_operations_are_forgotten() {
        let ops = Operations::default();
        for _ in 0..KEEP_FINISHED + 10 {
            let op = operation(&[]);
            let id = op.operation_id;
            ops.start(op, Cancel::new());
            ops.finish(id, Completion::new(OperationStatus::Succeeded, None));
        }
        assert_eq!(ops.list(&[]).len(), KEEP_FINISHED);
    }
}
