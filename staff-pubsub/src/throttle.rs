//! Rate limits for WARN lines that can repeat as often as calls do.
//!
//! A failure that every broadcast meets (the engine is down) would
//! otherwise write one WARN per call: hundreds a second. The rule is the
//! reconnect loop's: the first failure, a failure whose cause differs from
//! the previous one's, and then one every [`REPEAT_LOG_EVERY`] are logged at
//! WARN, with the number of failures not logged at WARN since the last one
//! that was; the rest go to DEBUG.

use std::time::{Duration, Instant};

use crate::loom::sync::Mutex;

/// How often a repeating WARN line is written again.
pub(crate) const REPEAT_LOG_EVERY: Duration = Duration::from_secs(30);

/// Decides which failures of one kind are logged at WARN.
///
/// Invariant: `unlogged` counts the failures since the last one admitted
/// (0 before the first).
#[derive(Default)]
pub(crate) struct FailureLog {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    last_logged: Option<Instant>,
    cause: String,
    unlogged: u64,
}

impl FailureLog {
    /// Records a failure with `cause`: `Some(n)` when it is to be logged at
    /// WARN, `n` being the failures not logged at WARN since the last one
    /// that was; `None` when it is not (log it at DEBUG).
    pub(crate) fn admit(&self, cause: &str) -> Option<u64> {
        let mut state = self.state.lock();
        let now = Instant::now();
        let due = state
            .last_logged
            .is_none_or(|at| now.duration_since(at) >= REPEAT_LOG_EVERY);
        if !due && state.cause == cause {
            state.unlogged += 1;
            return None;
        }
        cause.clone_into(&mut state.cause);
        state.last_logged = Some(now);
        Some(std::mem::take(&mut state.unlogged))
    }
}

#[cfg(test)]
mod tests {
    use super::FailureLog;

    #[test]
    fn first_then_changed_causes_then_counted() {
        let log = FailureLog::default();
        assert_eq!(log.admit("down"), Some(0));
        assert_eq!(log.admit("down"), None);
        assert_eq!(log.admit("down"), None);
        assert_eq!(log.admit("refused"), Some(2));
        assert_eq!(log.admit("refused"), None);
        assert_eq!(log.admit("down"), Some(1));
    }
}
