//! Which blobs a lazily served tree is fetching right now, so that fetches
//! can run side by side (a task's open beside a fetch ahead) and each blob
//! still crosses the network once: a fetch takes the blobs nobody is
//! fetching, and waits for the requests in flight that carry the others.
//!
//! Across processes (runs that serve their own tree) the catalog's lock
//! file still keeps fetches one at a time; in one process the fetches
//! share a single hold of it ([`SharedLock`]), since a second `flock` of
//! the file from the same process would wait for the first.

use crate::error::Result;
use crate::hololib::lock::{lock_file, FileLock};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};

/// The blobs in flight, each with the request that carries it.
#[derive(Default)]
pub struct InFlight {
    map: Mutex<HashMap<String, Arc<Flight>>>,
}

/// One request's blobs: done once it has ended (well or not).
#[derive(Default)]
pub struct Flight {
    done: Mutex<bool>,
    cv: Condvar,
}

impl Flight {
    /// Until the request has ended.
    pub fn wait(&self) {
        let mut done = self.done.lock().unwrap_or_else(|p| p.into_inner());
        while !*done {
            done = self.cv.wait(done).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// The blobs a caller is to fetch itself (registered as its flight), and
/// the flights carrying those of its blobs others are fetching.
pub struct Claim<'a> {
    registry: &'a InFlight,
    pub mine: Vec<String>,
    pub theirs: Vec<Arc<Flight>>,
    flight: Arc<Flight>,
}

impl InFlight {
    /// Split `wanted` (the missing blobs, each once) into those nobody
    /// fetches, now the caller's, and the flights of the others.
    pub fn claim(&self, wanted: Vec<String>) -> Claim<'_> {
        let flight = Arc::new(Flight::default());
        let mut mine = Vec::new();
        let mut theirs: Vec<Arc<Flight>> = Vec::new();
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        for d in wanted {
            match map.get(&d) {
                Some(f) => {
                    if !theirs.iter().any(|t| Arc::ptr_eq(t, f)) {
                        theirs.push(f.clone());
                    }
                }
                None => {
                    map.insert(d.clone(), flight.clone());
                    mine.push(d);
                }
            }
        }
        Claim {
            registry: self,
            mine,
            theirs,
            flight,
        }
    }
}

impl Claim<'_> {
    /// Wait for the others' flights to end.
    pub fn wait_theirs(&self) {
        for f in &self.theirs {
            f.wait();
        }
    }
}

impl Drop for Claim<'_> {
    /// The caller's request has ended: its blobs are here or will be
    /// asked for again by whoever still lacks them.
    fn drop(&mut self) {
        {
            let mut map = self.registry.map.lock().unwrap_or_else(|p| p.into_inner());
            for d in &self.mine {
                map.remove(d);
            }
        }
        *self.flight.done.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.flight.cv.notify_all();
    }
}

/// One `flock` of a lock file held while any fetch of this process runs.
pub struct SharedLock {
    path: PathBuf,
    held: Mutex<(usize, Option<FileLock>)>,
}

/// A fetch's share of a [`SharedLock`].
pub struct Share<'a>(&'a SharedLock);

impl SharedLock {
    pub fn new(path: PathBuf) -> SharedLock {
        SharedLock {
            path,
            held: Mutex::new((0, None)),
        }
    }

    /// Join the hold, taking the lock (and waiting for other processes)
    /// when no fetch of this process holds it.
    pub fn share(&self) -> Result<Share<'_>> {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        if held.0 == 0 {
            held.1 = Some(lock_file(&self.path)?);
        }
        held.0 += 1;
        Ok(Share(self))
    }
}

impl Drop for Share<'_> {
    fn drop(&mut self) {
        let mut held = self.0.held.lock().unwrap_or_else(|p| p.into_inner());
        held.0 -= 1;
        if held.0 == 0 {
            held.1 = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(ds: &[&str]) -> Vec<String> {
        ds.iter().map(|d| d.to_string()).collect()
    }

    #[test]
    fn a_blob_in_flight_is_waited_for_not_fetched_again() {
        let reg = InFlight::default();
        let a = reg.claim(v(&["x", "y"]));
        assert_eq!(a.mine, v(&["x", "y"]));
        let b = reg.claim(v(&["y", "z"]));
        assert_eq!(b.mine, v(&["z"]));
        assert_eq!(b.theirs.len(), 1);
        let waited = std::thread::scope(|s| {
            let w = s.spawn(|| {
                b.wait_theirs();
                std::time::Instant::now()
            });
            std::thread::sleep(std::time::Duration::from_millis(50));
            let ended = std::time::Instant::now();
            drop(a);
            w.join().unwrap() >= ended
        });
        assert!(waited, "b went on before a's request ended");
        // a's blobs are no longer in flight: a new claim takes them.
        let c = reg.claim(v(&["x", "z"]));
        assert_eq!(c.mine, v(&["x"]));
        drop(b);
        drop(c);
        assert_eq!(reg.claim(v(&["z"])).mine, v(&["z"]));
    }

    #[test]
    fn fetches_of_one_process_share_one_hold_of_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lazy.lck");
        let lock = SharedLock::new(path.clone());
        let one = lock.share().unwrap();
        // A second fetch of this process does not wait for the first.
        let two = lock.share().unwrap();
        let other = std::fs::File::open(&path).unwrap();
        let busy = |f: std::fs::File| {
            nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock).is_err()
        };
        assert!(busy(other.try_clone().unwrap()));
        drop(one);
        assert!(busy(other.try_clone().unwrap()));
        drop(two);
        assert!(!busy(other), "the lock is let go with the last share");
    }
}
