//! Which data-plane worker serves a newly accepted connection: the first worker that is
//! not full (it holds fewer than `pack` open connections and used less than half a CPU
//! lately); when every worker is full, the one holding the fewest connections (the first
//! of them on a tie).
//!
//! **Packing.** A worker with few connections often has nothing to do between a request
//! and its service's response and sleeps in `epoll_wait`; each sleep and wake-up is kernel
//! time that one worker holding all of those connections saves, because it finds several
//! of them ready at each wake-up. Up to 16 connections or so one worker serves more
//! requests than two sharing them, with 10–14 % less CPU time per request and a p99 that
//! moves little; at 32 its p99 grows, at 64 two are faster (measured in `docs/router.md`,
//! "Performance"). So workers are filled one after the other up to `pack`, and spread from
//! there on. `pack` 0 spreads from the first connection.
//!
//! **Busy workers are full.** A worker whose thread used more than half a CPU over the
//! last window (at least [`WINDOW`] long, read off its thread's CPU clock when a
//! connection is placed) takes no more connections while another worker is not full, so
//! that a few heavy connections do not leave one worker saturated beside idle ones.
//!
//! A worker serves its connections to their end, so what matters is how many each holds
//! now, not how many it was handed: round robin over accepted connections leaves one
//! worker with most of the long-lived connections when the others' connections were
//! short-lived ones that have closed since.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The shortest span over which a worker's CPU use is taken.
const WINDOW: Duration = Duration::from_millis(100);
/// A worker that used more than this share of a CPU over the last window is full.
const BUSY: f64 = 0.5;

/// Open connections and CPU clocks per worker.
pub(crate) struct Placement {
    open: Vec<Arc<AtomicUsize>>,
    clocks: Vec<OnceLock<cpu::Clock>>,
    /// Connections a worker is given before the next one is used.
    pack: usize,
    base: Instant,
    window: Mutex<Window>,
}

/// Whether each worker used more than [`BUSY`] of a CPU over the last complete window, and
/// where the current window started (nanoseconds since `base`, CPU nanoseconds of each
/// worker).
struct Window {
    start: u64,
    cpu_at_start: Vec<u64>,
    busy: Vec<bool>,
}

impl Placement {
    pub(crate) fn new(workers: usize, pack: usize) -> Placement {
        let n = workers.max(1);
        Placement {
            open: (0..n).map(|_| Arc::default()).collect(),
            clocks: (0..n).map(|_| OnceLock::new()).collect(),
            pack,
            base: Instant::now(),
            window: Mutex::new(Window {
                start: 0,
                cpu_at_start: vec![0; n],
                busy: vec![false; n],
            }),
        }
    }

    /// Called on worker `i`'s thread when it starts: its CPU use is read off that
    /// thread's clock from then on. Without it (or off Linux) the worker counts as idle.
    pub(crate) fn register_worker_thread(&self, i: usize) {
        if let Some(clock) = cpu::Clock::of_current_thread() {
            let _ = self.clocks[i].set(clock);
        }
    }

    fn cpu_nanos(&self, i: usize) -> u64 {
        self.clocks[i]
            .get()
            .and_then(cpu::Clock::nanos)
            .unwrap_or(0)
    }

    /// The worker for a new connection, and the token that counts the connection as open
    /// on it until dropped (when the connection ends, or if it never reaches the worker).
    pub(crate) fn place(&self) -> (usize, OpenConnection) {
        let now = u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.place_with(now, |i| self.cpu_nanos(i))
    }

    /// [`Placement::place`] at `now`, with the workers' CPU times from `cpu_nanos`.
    fn place_with(&self, now: u64, cpu_nanos: impl Fn(usize) -> u64) -> (usize, OpenConnection) {
        let mut w = self.window.lock().unwrap_or_else(|e| e.into_inner());
        let span = now.saturating_sub(w.start);
        if span >= WINDOW.as_nanos() as u64 {
            for i in 0..self.open.len() {
                let cpu = cpu_nanos(i);
                w.busy[i] = cpu.saturating_sub(w.cpu_at_start[i]) as f64 / span as f64 > BUSY;
                w.cpu_at_start[i] = cpu;
            }
            w.start = now;
        }
        let (i, n) = self
            .open
            .iter()
            .enumerate()
            .find(|(i, n)| n.load(Relaxed) < self.pack && !w.busy[*i])
            // `min_by_key` returns the first of equal minima.
            .or_else(|| {
                self.open
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, n)| n.load(Relaxed))
            })
            .expect("at least one worker");
        n.fetch_add(1, Relaxed);
        (i, OpenConnection(n.clone()))
    }

    /// `router_worker_connections` and `router_worker_cpu_seconds_total`, one line per
    /// worker each.
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
        let _ = writeln!(
            out,
            "# HELP router_worker_cpu_seconds_total CPU time used by each worker thread."
        );
        let _ = writeln!(out, "# TYPE router_worker_cpu_seconds_total counter");
        for i in 0..self.open.len() {
            let _ = writeln!(
                out,
                "router_worker_cpu_seconds_total{{worker=\"{i}\"}} {:.6}",
                self.cpu_nanos(i) as f64 / 1e9
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

/// A thread's CPU clock, readable from any thread of the process.
#[cfg(target_os = "linux")]
mod cpu {
    pub(super) struct Clock(libc::clockid_t);

    impl Clock {
        pub(super) fn of_current_thread() -> Option<Clock> {
            let mut id: libc::clockid_t = 0;
            // SAFETY: `pthread_self` is always valid for the calling thread, and
            // `pthread_getcpuclockid` writes one `clockid_t` to the pointer given.
            let rc = unsafe { libc::pthread_getcpuclockid(libc::pthread_self(), &mut id) };
            (rc == 0).then_some(Clock(id))
        }

        /// CPU time the thread has used, in nanoseconds; `None` once the kernel has
        /// released the thread (its clock is gone), which may be a moment after `join`.
        pub(super) fn nanos(&self) -> Option<u64> {
            let mut ts = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            // SAFETY: `clock_gettime` writes one `timespec` to the pointer given.
            let rc = unsafe { libc::clock_gettime(self.0, &mut ts) };
            (rc == 0).then(|| ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod cpu {
    pub(super) struct Clock;

    impl Clock {
        pub(super) fn of_current_thread() -> Option<Clock> {
            None
        }

        pub(super) fn nanos(&self) -> Option<u64> {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(p: &Placement) -> Vec<usize> {
        p.open.iter().map(|n| n.load(Relaxed)).collect()
    }

    /// Places `n` connections, keeps them open in `held`, and returns their workers.
    fn place_n(p: &Placement, held: &mut Vec<(usize, OpenConnection)>, n: usize) -> Vec<usize> {
        (0..n)
            .map(|_| {
                let (i, c) = p.place();
                held.push((i, c));
                i
            })
            .collect()
    }

    #[test]
    fn new_connections_spread_evenly() {
        let p = Placement::new(3, 0);
        let mut held = Vec::new();
        assert_eq!(place_n(&p, &mut held, 7), [0, 1, 2, 0, 1, 2, 0]);
        assert_eq!(counts(&p), [3, 2, 2]);
    }

    #[test]
    fn workers_fill_up_to_pack_then_spread() {
        let p = Placement::new(3, 2);
        let mut held = Vec::new();
        assert_eq!(place_n(&p, &mut held, 9), [0, 0, 1, 1, 2, 2, 0, 1, 2]);
        assert_eq!(counts(&p), [3, 3, 3]);
        // Below `pack` again, the workers fill in order: worker 0 up to `pack` (though
        // worker 1 holds fewer), then worker 1.
        held.retain(|(i, _)| *i != 0);
        held.drain(..2);
        assert_eq!(counts(&p), [0, 1, 3]);
        assert_eq!(place_n(&p, &mut held, 3), [0, 0, 1]);
        assert_eq!(counts(&p), [2, 2, 3]);
    }

    const MS: u64 = 1_000_000;

    #[test]
    fn a_busy_worker_is_full_whatever_it_holds() {
        let p = Placement::new(2, 4);
        let cpu = std::cell::Cell::new([0, 0]);
        let place = |now: u64| p.place_with(now * MS, |i| cpu.get()[i] * MS);
        let (first, _a) = place(150);
        assert_eq!(first, 0);
        // Within the window that started at 150 ms, the last window's verdicts hold, however
        // busy worker 0 is now.
        cpu.set([60, 0]);
        let (i, _b) = place(200);
        assert_eq!(i, 0);
        // Over the window from 150 to 260 ms worker 0 used 90 ms of CPU: full, though it
        // holds 2 of its 4; the next connection goes to worker 1.
        cpu.set([90, 0]);
        let (i, _c) = place(260);
        assert_eq!(i, 1);
        assert_eq!(counts(&p), [2, 1]);
        // Over the next window it used 10 of 110 ms: not full again.
        cpu.set([100, 0]);
        let (i, _d) = place(370);
        assert_eq!(i, 0);
        // Both busy: the fewest connections, the first on a tie.
        cpu.set([200, 100]);
        let held: Vec<_> = (0..3).map(|_| place(500)).collect();
        assert_eq!(held.iter().map(|(i, _)| *i).collect::<Vec<_>>(), [1, 1, 0]);
        assert_eq!(counts(&p), [4, 3]);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_worker_thread_that_spins_is_full() {
        let p = Arc::new(Placement::new(2, 4));
        // The windows' ends are given (the spinner's wall-clock time depends on the
        // machine's load), the CPU times are the threads' own clocks.
        let place = |now: u64| p.place_with(now, |i| p.cpu_nanos(i));
        let (i, _a) = place(WINDOW.as_nanos() as u64);
        assert_eq!(i, 0);
        // Worker 0's thread uses 200 ms of CPU; worker 1's sleeps. Both stay alive until
        // the next connection is placed (a thread's clock ends with it).
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
        let (end_tx, end_rx) = std::sync::mpsc::channel::<()>();
        let end_rx = Arc::new(Mutex::new(end_rx));
        let worker = |i: usize, spin: bool| {
            let (p, ready, end) = (p.clone(), ready_tx.clone(), end_rx.clone());
            std::thread::spawn(move || {
                p.register_worker_thread(i);
                while spin && p.cpu_nanos(i) < 200 * MS {
                    std::hint::spin_loop();
                }
                ready.send(()).unwrap();
                let _ = end.lock().unwrap().recv();
            })
        };
        let (spinner, sleeper) = (worker(0, true), worker(1, false));
        ready_rx.recv().unwrap();
        ready_rx.recv().unwrap();
        let (spun, slept) = (p.cpu_nanos(0), p.cpu_nanos(1));
        // 250 ms after the first window's end: worker 0 used 200 ms or more of them.
        let (i, _b) = place(WINDOW.as_nanos() as u64 + 250 * MS);
        drop(end_tx);
        spinner.join().unwrap();
        sleeper.join().unwrap();
        assert!(spun >= 200 * MS, "spun {spun} ns");
        assert!(slept < 20 * MS, "slept {slept} ns");
        assert_eq!(i, 1, "worker 0 used {spun} ns of CPU");
    }

    #[test]
    fn closed_connections_free_their_place() {
        let p = Placement::new(2, 0);
        let mut held = Vec::new();
        place_n(&p, &mut held, 6);
        // Worker 1's connections close (short-lived), worker 0's stay open.
        held.retain(|(i, _)| *i == 0);
        assert_eq!(counts(&p), [3, 0]);
        // Round robin would hand the next one to worker 0; it goes where there is room.
        assert_eq!(place_n(&p, &mut held, 3), [1, 1, 1]);
        assert_eq!(counts(&p), [3, 3]);
        held.clear();
        assert_eq!(counts(&p), [0, 0]);
    }

    #[test]
    fn the_gauge_has_a_line_per_worker() {
        let p = Placement::new(2, 0);
        let _held = p.place();
        let mut out = String::new();
        p.prometheus(&mut out);
        assert!(out.contains("# TYPE router_worker_connections gauge\n"));
        assert!(out.contains("router_worker_connections{worker=\"0\"} 1\n"));
        assert!(out.contains("router_worker_connections{worker=\"1\"} 0\n"));
        assert!(out.contains("# TYPE router_worker_cpu_seconds_total counter\n"));
        // No thread registered for a worker: it reads 0.
        assert!(out.contains("router_worker_cpu_seconds_total{worker=\"1\"} 0.000000\n"));
    }

    #[test]
    fn one_worker_takes_everything() {
        let p = Placement::new(1, 0);
        let mut held = Vec::new();
        assert!(place_n(&p, &mut held, 10).iter().all(|&i| i == 0));
        assert_eq!(counts(&p), [10]);
    }
}
