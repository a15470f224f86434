//! What a reader of the tree must be told: a file that answered EIO, and
//! why (a missing or corrupt blob, a bad catalog entry), or passthrough
//! refused. A per-run mount prints these on the run's stderr as they
//! happen; a warm server keeps them here, numbered, and each run asks for
//! those of its own time (`crate::lower::server`), so the run that hit the error
//! is the one that says so, once per file.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// Events kept for runs to collect; older ones are dropped (a run that
/// misses some is told how many).
const KEEP: usize = 4096;

#[derive(Debug, Default)]
pub struct Notices {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    next: u64,
    /// (sequence number, inode) of each event, oldest first.
    events: VecDeque<(u64, u64)>,
    /// The message of each inode's first event.
    messages: HashMap<u64, String>,
}

impl Notices {
    /// Note an event about `ino`; `message` is built only for its first,
    /// and returned then (the one to log).
    pub fn push(&self, ino: u64, message: impl FnOnce() -> String) -> Option<String> {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let seq = g.next;
        g.next += 1;
        if g.events.len() == KEEP {
            g.events.pop_front();
        }
        g.events.push_back((seq, ino));
        if g.messages.contains_key(&ino) {
            return None;
        }
        let m = message();
        g.messages.insert(ino, m.clone());
        Some(m)
    }

    /// The number the next event gets.
    pub fn next_seq(&self) -> u64 {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).next
    }

    /// The messages of the files with events numbered `seq` or later, once
    /// each, in order of their first such event.
    pub fn since(&self, seq: u64) -> Vec<String> {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        let oldest = g.events.front().map_or(g.next, |e| e.0);
        if oldest > seq {
            out.push(format!(
                "{} earlier read errors were not kept (see the warm server's log)",
                oldest - seq
            ));
        }
        for &(s, ino) in &g.events {
            if s >= seq && seen.insert(ino) {
                if let Some(m) = g.messages.get(&ino) {
                    out.push(m.clone());
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_run_hears_of_its_own_errors_once_per_file() {
        let n = Notices::default();
        assert_eq!(n.push(7, || "a: bad".into()).as_deref(), Some("a: bad"));
        assert_eq!(n.push(7, || unreachable!()), None);
        let second_run = n.next_seq();
        assert!(n.since(second_run).is_empty());
        assert_eq!(n.push(7, || unreachable!()), None);
        assert!(n.push(9, || "b: bad".into()).is_some());
        assert_eq!(n.push(7, || unreachable!()), None);
        assert_eq!(n.since(second_run), vec!["a: bad", "b: bad"]);
        assert_eq!(n.since(0), vec!["a: bad", "b: bad"]);
    }

    #[test]
    fn a_run_that_missed_events_is_told() {
        let n = Notices::default();
        for i in 0..(KEEP as u64 + 10) {
            n.push(i % 3, || format!("f{}", i % 3));
        }
        let got = n.since(0);
        assert!(got[0].starts_with("10 earlier"), "{got:?}");
        assert_eq!(got.len(), 4);
    }
}
