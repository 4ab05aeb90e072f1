//! When each API token was last used, kept off the hot path: an admitted
//! call notes its token's id and the time in memory (a map insert under a
//! short lock, no I/O), and a background task writes what was noted in one
//! transaction every [`FLUSH_INTERVAL`] and once more at shutdown. So a
//! token costs at most one database write per interval however often it is
//! used, and `last_used_at` lags the last call by at most the interval.
//! What a failed write held is kept for the next one.

use std::{collections::HashMap, sync::Mutex, time::Duration};

/// How often noted uses are written (the granularity `Token.last_used_at`
/// documents).
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(30);

/// Tokens noted at most between two writes; beyond that new tokens are not
/// noted until the next write (only valid tokens are noted, so this is a
/// guard, not a limit one meets).
const CAPACITY: usize = 100_000;

/// Uses noted since the last write: token id → latest use (Unix ms).
#[derive(Debug, Default)]
pub struct TokenUse {
    pending: Mutex<HashMap<String, i64>>,
}

impl TokenUse {
    /// Notes that `token_id` was used at `at`.
    pub fn note(&self, token_id: &str, at: i64) {
        let Ok(mut pending) = self.pending.lock() else { return };
        if let Some(last) = pending.get_mut(token_id) {
            *last = (*last).max(at);
        } else if pending.len() < CAPACITY {
            pending.insert(token_id.to_owned(), at);
        }
    }

    /// Takes what was noted, leaving nothing.
    pub fn take(&self) -> HashMap<String, i64> {
        self.pending.lock().map(|mut pending| std::mem::take(&mut *pending)).unwrap_or_default()
    }

    /// Puts back what could not be written, keeping the later of two uses.
    pub fn restore(&self, taken: HashMap<String, i64>) {
        for (id, at) in taken {
            self.note(&id, at);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uses_are_coalesced_per_token_keeping_the_latest() {
        let uses = TokenUse::default();
        for at in [10, 30, 20] {
            uses.note("a", at);
        }
        uses.note("b", 5);
        let taken = uses.take();
        assert_eq!(taken, HashMap::from([("a".to_owned(), 30), ("b".to_owned(), 5)]));
        assert!(uses.take().is_empty(), "taking empties it");

        // A failed write is put back without undoing a later use.
        uses.note("a", 40);
        uses.restore(taken);
        assert_eq!(uses.take(), HashMap::from([("a".to_owned(), 40), ("b".to_owned(), 5)]));
    }
}
