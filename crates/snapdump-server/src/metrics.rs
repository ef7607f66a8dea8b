//! `GET /metrics`: Prometheus text exposition of what the server did.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::operations::OperationStatus;

#[derive(Debug, Default)]
pub struct Metrics {
    succeeded: AtomicU64,
    failed: AtomicU64,
    cancelled: AtomicU64,
    rejected: AtomicU64,
    bytes: AtomicU64,
    pause_us: AtomicU64,
    duration_us: AtomicU64,
    timed: AtomicU64,
}

impl Metrics {
    /// Counts a finished dump; `bytes`, `pause` and `duration` only for succeeded ones.
    pub fn record(&self, status: OperationStatus, bytes: u64, pause: Duration, duration: Duration) {
        let counter = match status {
            OperationStatus::Succeeded => &self.succeeded,
            OperationStatus::Failed => &self.failed,
            OperationStatus::Cancelled => &self.cancelled,
            OperationStatus::Running => return,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if status == OperationStatus::Succeeded {
            self.bytes.fetch_add(bytes, Ordering::Relaxed);
            self.pause_us
                .fetch_add(pause.as_micros() as u64, Ordering::Relaxed);
            self.duration_us
                .fetch_add(duration.as_micros() as u64, Ordering::Relaxed);
            self.timed.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts a request refused with 429.
    pub fn record_rejected(&self) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
    }

    /// The exposition text; `in_progress` is the number of dumps under way.
    pub fn render(&self, in_progress: usize) -> String {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let seconds = |c: &AtomicU64| get(c) as f64 / 1e6;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP snapdump_dumps_total Dumps finished, by outcome.\n\
             # TYPE snapdump_dumps_total counter\n\
             snapdump_dumps_total{{status=\"succeeded\"}} {}\n\
             snapdump_dumps_total{{status=\"failed\"}} {}\n\
             snapdump_dumps_total{{status=\"cancelled\"}} {}",
            get(&self.succeeded),
            get(&self.failed),
            get(&self.cancelled)
        );
        let _ = writeln!(
            out,
            "# HELP snapdump_dumps_rejected_total Dump requests refused because the concurrent \
             dump limit was reached (429).\n\
             # TYPE snapdump_dumps_rejected_total counter\n\
             snapdump_dumps_rejected_total {}",
            get(&self.rejected)
        );
        let _ = writeln!(
            out,
            "# HELP snapdump_dumps_in_progress Dumps under way.\n\
             # TYPE snapdump_dumps_in_progress gauge\n\
             snapdump_dumps_in_progress {in_progress}"
        );
        let _ = writeln!(
            out,
            "# HELP snapdump_dump_bytes_total Bytes of succeeded dumps, streamed or uploaded.\n\
             # TYPE snapdump_dump_bytes_total counter\n\
             snapdump_dump_bytes_total {}",
            get(&self.bytes)
        );
        for (name, help, sum) in [
            (
                "snapdump_dump_pause_seconds",
                "How long targets were held stopped, per succeeded dump.",
                &self.pause_us,
            ),
            (
                "snapdump_dump_duration_seconds",
                "How long succeeded dumps took from request to last byte.",
                &self.duration_us,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} summary\n{name}_sum {}\n{name}_count {}",
                seconds(sum),
                get(&self.timed)
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters() {
        let m = Metrics::default();
        m.record(
            OperationStatus::Succeeded,
            100,
            Duration::from_millis(5),
            Duration::from_secs(1),
        );
        m.record(OperationStatus::Failed, 7, Duration::ZERO, Duration::ZERO);
        m.record_rejected();
        let text = m.render(2);
        assert!(
            text.contains("snapdump_dumps_total{status=\"succeeded\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("snapdump_dumps_total{status=\"failed\"} 1\n"));
        assert!(text.contains("snapdump_dump_bytes_total 100\n"));
        assert!(text.contains("snapdump_dumps_in_progress 2\n"));
        assert!(text.contains("snapdump_dumps_rejected_total 1\n"));
        assert!(text.contains("snapdump_dump_pause_seconds_sum 0.005\n"));
        assert!(text.contains("snapdump_dump_duration_seconds_count 1\n"));
    }
}
