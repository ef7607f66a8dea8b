//! `uid`: dotnet-monitor's other way to name a process, the .NET runtime's instance cookie.
//!
//! A .NET 5 or later runtime answers the diagnostics IPC `ProcessInfo` command with a GUID
//! made when it started (its "runtime instance cookie"); dotnet-monitor calls it the process's
//! `uid`. [`snapdump::dotnet::detect_with_timeout`] asks for it: only processes that map
//! `libcoreclr.so` and listen on a diagnostics socket are asked, each for at most
//! [`ASK_TIMEOUT`]. .NET Core 3.1, whose runtime has no cookie, gets a stable one made from
//! the pid and its diagnostics socket's key ([`snapdump::dotnet::synthesized_cookie`], as
//! dotnet-monitor proposed in dotnet/dotnet-monitor#49). Other processes and runtimes started
//! with `DOTNET_EnableDiagnostics=0` have no uid: `null` in `/processes`, and no `uid=`
//! selects them.
//!
//! A cookie never changes for the life of a process, so the ones found are kept, keyed by pid
//! and start time (a reused pid is another process).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use uuid::Uuid;

use crate::problem::Problem;

/// How long a runtime has to answer `ProcessInfo`.
pub const ASK_TIMEOUT: Duration = Duration::from_millis(500);

/// The cookies found so far.
#[derive(Debug, Default)]
pub struct RuntimeIds {
    known: Mutex<HashMap<(i32, u64), String>>,
}

/// A `uid=` value: a GUID (`xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`, any case, braces or none).
pub fn parse_uid(text: &str) -> Result<Uuid, Problem> {
    Uuid::parse_str(text.trim()).map_err(|_| {
        Problem::bad_request(
            "bad_uid",
            format!(
                "uid {text:?} is not a .NET runtime instance cookie \
                 (a GUID: xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)"
            ),
        )
    })
}

impl RuntimeIds {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(i32, u64), String>> {
        self.known.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The runtime instance cookie of `pid`, if it is a .NET process that tells it. Blocks (it
    /// reads `/proc` and may ask the runtime): call it on a blocking thread.
    pub fn of(&self, pid: i32) -> Option<String> {
        let start = snapdump::process::read_stat(pid).ok()?.starttime;
        if let Some(cookie) = self.lock().get(&(pid, start)) {
            return Some(cookie.clone());
        }
        let cookie = snapdump::dotnet::detect_with_timeout(pid, ASK_TIMEOUT)
            .ok()?
            .instance_cookie?;
        let mut known = self.lock();
        // Forget processes that are gone, now and then.
        if known.len() > 256 {
            known.retain(|(pid, start), _| {
                snapdump::process::read_stat(*pid).is_ok_and(|s| s.starttime == *start)
            });
        }
        known.insert((pid, start), cookie.clone());
        Some(cookie)
    }

    /// The process whose runtime cookie is `uid`, among `pids`; a well-formed uid that
    /// matches none is a 400 `no_such_process`.
    pub fn find(&self, uid: &Uuid, pids: impl IntoIterator<Item = i32>) -> Result<i32, Problem> {
        let wanted = uid.hyphenated().to_string();
        let me = std::process::id() as i32;
        pids.into_iter()
            .filter(|&pid| pid != me)
            .find(|&pid| {
                self.of(pid)
                    .is_some_and(|c| c.eq_ignore_ascii_case(&wanted))
            })
            .ok_or_else(|| {
                Problem::bad_request(
                    "no_such_process",
                    format!(
                        "no process has the .NET runtime instance cookie {wanted} (uid is known \
                         only for .NET 5 and later with diagnostics enabled; see GET /processes)"
                    ),
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uids_parse() {
        let uid = parse_uid("00112233-4455-6677-8899-AABBCCDDEEFF").unwrap();
        assert_eq!(
            uid.hyphenated().to_string(),
            "00112233-4455-6677-8899-aabbccddeeff"
        );
        assert!(parse_uid("{00112233-4455-6677-8899-aabbccddeeff}").is_ok());
        for bad in ["5", "", "not-a-guid", "00112233-4455-6677-8899-aabbccddeef"] {
            assert_eq!(parse_uid(bad).unwrap_err().code, "bad_uid", "{bad:?}");
        }
    }

    #[test]
    fn a_uid_no_runtime_has_selects_nothing() {
        let ids = RuntimeIds::default();
        let me = std::process::id() as i32;
        let err = ids.find(&Uuid::new_v4(), [me, 1]).unwrap_err();
        assert_eq!(err.code, "no_such_process");
        assert_eq!(ids.of(me), None);
    }
}
