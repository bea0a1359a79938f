//! Busy polling: a worker that runs out of work keeps polling its sockets for a short
//! while before it sleeps (like Linux's `net.core.busy_poll`, or Go's scheduler spinning
//! before it parks a thread).
//!
//! A proxied request wakes its worker at least twice: for the request, and for the
//! service's response a few tens of microseconds later. Between the two, a worker with
//! nothing else to do blocks in `epoll_wait`, and the kernel puts its thread to sleep and
//! wakes it again (on a virtual machine also halting and waking the virtual CPU). That was
//! the router's largest kernel cost at low concurrency (`docs/router.md`, "Performance").
//! Instead, after each request the worker's [`poller`] task keeps the runtime polling
//! without blocking (a `yield_now` makes the current-thread runtime poll its driver with a
//! zero timeout), and gives the CPU to any other runnable thread between polls
//! (`sched_yield`), until no request has started for `budget`. Then it parks until the
//! next request starts ([`activity`]), and the worker sleeps in `epoll_wait` as before. So
//! an idle router uses no CPU, and a busy one does not sleep between a request and its
//! response.

use std::cell::Cell;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

thread_local! {
    /// Requests started on this thread (wrapping).
    static STARTED: Cell<u64> = const { Cell::new(0) };
    /// Set while this thread's poller is parked: how to wake it.
    static PARKED: Cell<Option<Arc<Notify>>> = const { Cell::new(None) };
}

/// Notes that a request started on this thread: re-arms the thread's poller.
#[inline]
pub(crate) fn activity() {
    STARTED.with(|s| s.set(s.get().wrapping_add(1)));
    if let Some(notify) = PARKED.with(Cell::take) {
        notify.notify_one();
    }
}

/// Runs on a worker's runtime for the worker's life (it never returns: abort it). Polls
/// until no request has started on this thread for `budget`, then parks until one does.
pub(crate) async fn poller(budget: Duration) {
    let notify = Arc::new(Notify::new());
    loop {
        let mut seen = STARTED.with(Cell::get);
        let mut since = Instant::now();
        loop {
            // Runs the other ready tasks, polls the sockets without blocking, then here.
            tokio::task::yield_now().await;
            let now = STARTED.with(Cell::get);
            if now != seen {
                (seen, since) = (now, Instant::now());
            } else if since.elapsed() >= budget {
                break;
            } else {
                yield_cpu();
            }
        }
        PARKED.with(|p| p.set(Some(notify.clone())));
        // A request that started since the check above has taken `PARKED` and stored a
        // permit: this returns at once then.
        notify.notified().await;
    }
}

/// Lets another thread that is ready to run on this CPU run first.
fn yield_cpu() {
    #[cfg(unix)]
    // SAFETY: `sched_yield` takes no arguments and touches no memory of ours.
    unsafe {
        libc::sched_yield();
    }
    #[cfg(not(unix))]
    std::thread::yield_now();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parked() -> bool {
        PARKED.with(|p| {
            let n = p.take();
            let parked = n.is_some();
            p.set(n);
            parked
        })
    }

    /// CPU time used by the calling thread so far.
    #[cfg(target_os = "linux")]
    fn thread_cpu() -> Duration {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid, writable timespec.
        assert_eq!(
            unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) },
            0
        );
        Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn parks_when_no_request_starts_and_a_request_rearms_it() {
        runtime().block_on(async {
            // A budget long enough that a loaded machine does not pause the test that long
            // between two of its steps.
            let task = tokio::spawn(poller(Duration::from_millis(20)));
            tokio::task::yield_now().await;
            assert!(!parked(), "polls right after it starts");
            tokio::time::sleep(Duration::from_millis(200)).await;
            assert!(
                parked(),
                "parked once the budget has passed without a request"
            );
            activity();
            assert!(!parked(), "a request takes the parked poller's waker");
            tokio::task::yield_now().await;
            tokio::task::yield_now().await;
            assert!(!parked(), "polls again after a request");
            tokio::time::sleep(Duration::from_millis(200)).await;
            assert!(parked(), "and parks again");
            task.abort();
        });
    }

    #[test]
    fn requests_keep_it_polling() {
        runtime().block_on(async {
            let task = tokio::spawn(poller(Duration::from_millis(200)));
            let until = Instant::now() + Duration::from_millis(300);
            while Instant::now() < until {
                activity();
                tokio::time::sleep(Duration::from_millis(2)).await;
                assert!(
                    !parked(),
                    "parked although a request started about 2 ms ago"
                );
            }
            task.abort();
        });
    }

    /// An idle worker uses no CPU time beyond the budget: the poller does not spin on.
    #[cfg(target_os = "linux")]
    #[test]
    fn an_idle_worker_stops_using_cpu() {
        runtime().block_on(async {
            let task = tokio::spawn(poller(Duration::from_millis(1)));
            activity();
            tokio::time::sleep(Duration::from_millis(20)).await;
            let before = thread_cpu();
            tokio::time::sleep(Duration::from_millis(300)).await;
            let used = thread_cpu() - before;
            assert!(
                used < Duration::from_millis(30),
                "the idle worker thread used {used:?} of CPU in 300 ms"
            );
            task.abort();
        });
    }
}
