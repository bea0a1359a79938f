//! Which data-plane worker serves a newly accepted connection: the one holding the fewest
//! open connections (the first of them on a tie).
//!
//! A worker serves its connections to their end, so what matters is how many each holds
//! now, not how many it was handed: round robin over accepted connections leaves one
//! worker with most of the long-lived connections when the others' connections were
//! short-lived ones that have closed since.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

/// Open connections per worker.
pub(crate) struct Placement {
    open: Vec<Arc<AtomicUsize>>,
}

impl Placement {
    pub(crate) fn new(workers: usize) -> Placement {
        Placement {
            open: (0..workers.max(1)).map(|_| Arc::default()).collect(),
        }
    }

    /// The worker for a new connection, and the token that counts the connection as open
    /// on it until dropped (when the connection ends, or if it never reaches the worker).
    pub(crate) fn place(&self) -> (usize, OpenConnection) {
        // `min_by_key` returns the first of equal minima.
        let (i, n) = self
            .open
            .iter()
            .enumerate()
            .min_by_key(|(_, n)| n.load(Relaxed))
            .expect("at least one worker");
        n.fetch_add(1, Relaxed);
        (i, OpenConnection(n.clone()))
    }

    /// `router_worker_connections`, one line per worker.
    pub(crate) fn prometheus(&self, out: &mut String) {
        use std::fmt::Write as _;
        let _ = writeln!(
            out,
            "# HELP router_worker_connections Open data-port connections per worker thread."
        );
        let _ = writeln!(out, "# TYPE router_worker_connections gauge");
        for (i, n) in self.open.iter().enumerate() {
            let _ = writeln!(
                out,
                "router_worker_connections{{worker=\"{i}\"}} {}",
                n.load(Relaxed)
            );
        }
    }
}

/// Counts one connection as open on its worker while it lives.
pub(crate) struct OpenConnection(Arc<AtomicUsize>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(p: &Placement) -> Vec<usize> {
        p.open.iter().map(|n| n.load(Relaxed)).collect()
    }

    #[test]
    fn new_connections_spread_evenly() {
        let p = Placement::new(3);
        let held: Vec<_> = (0..7).map(|_| p.place()).collect();
        let order: Vec<usize> = held.iter().map(|(i, _)| *i).collect();
        assert_eq!(order, [0, 1, 2, 0, 1, 2, 0]);
        assert_eq!(counts(&p), [3, 2, 2]);
    }

    #[test]
    fn closed_connections_free_their_place() {
        let p = Placement::new(2);
        let mut held: Vec<_> = (0..6).map(|_| p.place()).collect();
        // Worker 1's connections close (short-lived), worker 0's stay open.
        held.retain(|(i, _)| *i == 0);
        assert_eq!(counts(&p), [3, 0]);
        // Round robin would hand the next one to worker 0; it goes where there is room.
        let next: Vec<usize> = (0..3)
            .map(|_| p.place())
            .map(|(i, c)| {
                held.push((i, c));
                i
            })
            .collect();
        assert_eq!(next, [1, 1, 1]);
        assert_eq!(counts(&p), [3, 3]);
        held.clear();
        assert_eq!(counts(&p), [0, 0]);
    }

    #[test]
    fn the_gauge_has_a_line_per_worker() {
        let p = Placement::new(2);
        let _held = p.place();
        let mut out = String::new();
        p.prometheus(&mut out);
        assert!(out.contains("# TYPE router_worker_connections gauge\n"));
        assert!(out.contains("router_worker_connections{worker=\"0\"} 1\n"));
        assert!(out.contains("router_worker_connections{worker=\"1\"} 0\n"));
    }

    #[test]
    fn one_worker_takes_everything() {
        let p = Placement::new(1);
        let held: Vec<_> = (0..10).map(|_| p.place()).collect();
        assert!(held.iter().all(|(i, _)| *i == 0));
        assert_eq!(counts(&p), [10]);
    }
}
