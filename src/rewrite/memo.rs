//! A bounded memo of rewritten data keys, for the server.
//!
//! Why: kapp-controller re-applies the extension on every sync, so the webhook sees the very
//! same ConfigMap again and again. Rewriting a key is a pure function of its name, its text
//! and the values, so the server keeps the last results and answers a repeat with a lookup
//! (hash, then a full comparison of name and text: a hash collision can never return another
//! key's result). The memo belongs to one set of values: the server builds a new one when the
//! values are reloaded. Bounded by bytes held (inputs and outputs), least recently used first
//! out; a memo of zero bytes remembers nothing. Only successful rewrites are kept: an error is
//! computed again, with its message, every time.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::{Mutex, PoisonError};

use prometheus_client::metrics::counter::Counter;

use super::Edit;

/// Per-entry bookkeeping counted on top of the texts.
const ENTRY_OVERHEAD: usize = 256;

/// Remembered rewrites of data keys (see the module docs).
#[derive(Debug)]
pub struct Memo {
    capacity_bytes: usize,
    /// Least recently used first.
    entries: Mutex<Vec<Entry>>,
    hits: Counter,
    misses: Counter,
}

#[derive(Debug)]
struct Entry {
    hash: u64,
    key: String,
    text: String,
    edit: Edit,
    bytes: usize,
}

impl Memo {
    /// A memo holding at most `capacity_bytes` of input and output text.
    pub fn new(capacity_bytes: usize) -> Self {
        Self {
            capacity_bytes,
            entries: Mutex::new(Vec::new()),
            hits: Counter::default(),
            misses: Counter::default(),
        }
    }

    /// A memo that remembers nothing: every rewrite is computed.
    pub fn off() -> Self {
        Self::new(0)
    }

    /// Counts lookups into these counters (shared with a metrics registry).
    #[must_use]
    pub fn counting(mut self, hits: Counter, misses: Counter) -> Self {
        self.hits = hits;
        self.misses = misses;
        self
    }

    /// The rewrite of data key `key` holding `text`: remembered, or computed by `rewrite`.
    /// Lookups are counted (hits and misses); a memo of capacity zero neither looks up nor
    /// counts.
    pub fn get_or_rewrite<E>(
        &self,
        key: &str,
        text: &str,
        rewrite: impl FnOnce() -> Result<Edit, E>,
    ) -> Result<Edit, E> {
        if self.capacity_bytes == 0 {
            return rewrite();
        }
        let hash = hash_of(key, text);
        {
            let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(i) = entries
                .iter()
                .rposition(|e| e.hash == hash && e.key == key && e.text == text)
            {
                let entry = entries.remove(i);
                let edit = entry.edit.clone();
                entries.push(entry);
                self.hits.inc();
                return Ok(edit);
            }
        }
        // Computed outside the lock: other requests are not held up by this one.
        self.misses.inc();
        let result = rewrite();
        if let Ok(edit) = &result {
            self.remember(hash, key, text, edit);
        }
        result
    }

    fn remember(&self, hash: u64, key: &str, text: &str, edit: &Edit) {
        let bytes = ENTRY_OVERHEAD
            + key.len()
            + text.len()
            + edit.text.as_ref().map_or(0, String::len)
            + edit.warnings.iter().map(String::len).sum::<usize>();
        if bytes > self.capacity_bytes {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries
            .iter()
            .any(|e| e.hash == hash && e.key == key && e.text == text)
        {
            return; // a concurrent request got there first
        }
        let mut held: usize = entries.iter().map(|e| e.bytes).sum::<usize>() + bytes;
        let mut evict = 0;
        while held > self.capacity_bytes && evict < entries.len() {
            held -= entries[evict].bytes;
            evict += 1;
        }
        entries.drain(..evict);
        entries.push(Entry {
            hash,
            key: key.to_owned(),
            text: text.to_owned(),
            edit: edit.clone(),
            bytes,
        });
    }

    /// Bytes held now (for tests and metrics).
    pub fn held_bytes(&self) -> usize {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|e| e.bytes)
            .sum()
    }
}

fn hash_of(key: &str, text: &str) -> u64 {
    let mut h = DefaultHasher::new();
    key.hash(&mut h);
    text.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edit(s: &str) -> Edit {
        Edit {
            text: Some(s.to_owned()),
            warnings: vec!["w".into()],
        }
    }

    fn ok(s: &'static str) -> impl FnOnce() -> Result<Edit, ()> {
        move || Ok(edit(s))
    }

    /// How a lookup went, from the memo's counters.
    #[derive(Debug, PartialEq)]
    enum Lookup {
        Hit,
        Miss,
        Off,
    }

    /// `get_or_rewrite`, with how it went.
    fn lookup<E>(
        m: &Memo,
        key: &str,
        text: &str,
        rewrite: impl FnOnce() -> Result<Edit, E>,
    ) -> (Result<Edit, E>, Lookup) {
        let (hits, misses) = (m.hits.get(), m.misses.get());
        let result = m.get_or_rewrite(key, text, rewrite);
        let how = match (m.hits.get() - hits, m.misses.get() - misses) {
            (1, 0) => Lookup::Hit,
            (0, 1) => Lookup::Miss,
            (0, 0) => Lookup::Off,
            other => panic!("one lookup counted as {other:?}"),
        };
        (result, how)
    }

    #[test]
    fn repeats_are_answered_from_the_memo_and_equal_the_computation() {
        let m = Memo::new(1 << 20);
        let (first, l1) = lookup(&m, "k", "text", ok("new"));
        assert_eq!(l1, Lookup::Miss);
        let (again, l2) = lookup(&m, "k", "text", || -> Result<Edit, ()> {
            panic!("must not recompute")
        });
        assert_eq!(l2, Lookup::Hit);
        assert_eq!(first, again);
        // Another key or another text is another entry.
        assert_eq!(lookup(&m, "k2", "text", ok("x")).1, Lookup::Miss);
        assert_eq!(lookup(&m, "k", "text2", ok("y")).1, Lookup::Miss);
        assert_eq!(lookup(&m, "k", "text", ok("z")).0, Ok(edit("new")));
    }

    #[test]
    fn errors_are_not_remembered() {
        let m = Memo::new(1 << 20);
        assert_eq!(lookup(&m, "k", "t", || Err::<Edit, _>(1)).0, Err(1));
        assert_eq!(lookup(&m, "k", "t", || Err::<Edit, _>(2)).0, Err(2));
        assert_eq!(m.held_bytes(), 0);
    }

    #[test]
    fn bounded_by_bytes_least_recently_used_out() {
        let big = "x".repeat(1000);
        let m = Memo::new(3 * (ENTRY_OVERHEAD + 1 + 1000 + 3 + 1));
        let run = |k: &str| lookup(&m, k, &big, || Ok::<_, ()>(edit("new"))).1;
        assert_eq!(run("a"), Lookup::Miss);
        assert_eq!(run("b"), Lookup::Miss);
        assert_eq!(run("c"), Lookup::Miss);
        assert_eq!(run("a"), Lookup::Hit); // a is now the most recent
        assert_eq!(run("d"), Lookup::Miss); // evicts b
        assert_eq!(run("a"), Lookup::Hit);
        assert_eq!(run("c"), Lookup::Hit);
        assert_eq!(run("b"), Lookup::Miss);
        assert!(m.held_bytes() <= 3 * (ENTRY_OVERHEAD + 1 + 1000 + 3 + 1));
        // Too big for the memo at all: computed every time, nothing evicted for it.
        let huge = "y".repeat(10_000);
        assert_eq!(
            lookup(&m, "h", &huge, || Ok::<_, ()>(edit("n"))).1,
            Lookup::Miss
        );
        assert_eq!(run("b"), Lookup::Hit);
    }

    #[test]
    fn off_remembers_nothing() {
        let m = Memo::off();
        assert_eq!(lookup(&m, "k", "t", ok("a")).1, Lookup::Off);
        assert_eq!(lookup(&m, "k", "t", ok("a")).1, Lookup::Off);
        assert_eq!(m.held_bytes(), 0);
    }
}
