//! Pinning the data-plane worker threads one per CPU (like nginx's
//! `worker_cpu_affinity auto`).
//!
//! Each worker is a single-threaded runtime that owns its connections to the end. Left to
//! the scheduler, both workers of a two-core machine often end up on one core while the
//! other runs the clients and services: every connection of the worker waiting for its
//! turn then waits a whole time slice, and that was the router's tail latency (measured
//! in `docs/router.md`, "Performance"). Pinned, each worker shares a core of its own with
//! whatever else runs there, and the scheduler still shares that core fairly.
//!
//! Only the CPUs the process may use are considered (its affinity mask, which a container's
//! cpuset restricts), and only when there are at least as many of them as workers: more
//! workers than CPUs would put two on one core, which the scheduler does better alone.

/// Which CPU each of `workers` workers is pinned to, given the CPUs the process may use
/// (ascending): worker `i` on the `i`-th of them. `None` (no pinning) without enough CPUs.
pub(crate) fn plan(workers: usize, allowed: &[usize]) -> Option<Vec<usize>> {
    (workers > 0 && allowed.len() >= workers).then(|| allowed[..workers].to_vec())
}

/// The CPUs this process may run on, ascending; empty when they cannot be read (or off
/// Linux).
pub(crate) fn allowed_cpus() -> Vec<usize> {
    imp::allowed_cpus()
}

/// Pins the calling thread to `cpu`.
pub(crate) fn pin_current_thread(cpu: usize) -> std::io::Result<()> {
    imp::pin_current_thread(cpu)
}

#[cfg(target_os = "linux")]
mod imp {
    use std::io;

    pub(super) fn allowed_cpus() -> Vec<usize> {
        // SAFETY: `cpu_set_t` is a plain bit array, valid when zeroed; `sched_getaffinity`
        // writes at most `size_of::<cpu_set_t>()` bytes into it; `CPU_ISSET` reads it with
        // an index below `CPU_SETSIZE`.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
                return Vec::new();
            }
            (0..libc::CPU_SETSIZE as usize)
                .filter(|&cpu| libc::CPU_ISSET(cpu, &set))
                .collect()
        }
    }

    pub(super) fn pin_current_thread(cpu: usize) -> io::Result<()> {
        if cpu >= libc::CPU_SETSIZE as usize {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        }
        // SAFETY: as above; `CPU_SET` writes one bit below `CPU_SETSIZE` (checked), and
        // `sched_setaffinity` with pid 0 changes only the calling thread.
        let rc = unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut set);
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    pub(super) fn allowed_cpus() -> Vec<usize> {
        Vec::new()
    }

    pub(super) fn pin_current_thread(_cpu: usize) -> std::io::Result<()> {
        Err(std::io::Error::from(std::io::ErrorKind::Unsupported))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_cpu_per_worker_or_none() {
        assert_eq!(plan(2, &[0, 1]), Some(vec![0, 1]));
        // A cpuset: the allowed CPUs, not 0..n.
        assert_eq!(plan(2, &[3, 5, 7]), Some(vec![3, 5]));
        assert_eq!(plan(1, &[4]), Some(vec![4]));
        // More workers than CPUs, or nothing known: no pinning.
        assert_eq!(plan(3, &[0, 1]), None);
        assert_eq!(plan(2, &[]), None);
        assert_eq!(plan(0, &[0, 1]), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_thread_is_pinned_to_an_allowed_cpu() {
        let allowed = allowed_cpus();
        assert!(
            !allowed.is_empty(),
            "the process's affinity mask is readable"
        );
        let cpu = *allowed.last().unwrap();
        // On a thread of its own, so the test's thread keeps its mask.
        let seen = std::thread::spawn(move || {
            pin_current_thread(cpu).unwrap();
            allowed_cpus()
        })
        .join()
        .unwrap();
        assert_eq!(seen, vec![cpu]);
        assert!(pin_current_thread(libc::CPU_SETSIZE as usize).is_err());
    }
}
