//! Waking blocked threads at shutdown: an eventfd every blocking wait also
//! polls, so one `signal` releases all of them. A wait may watch a second
//! one, for an end of its own (the UDP socket it waits on being replaced).

use crate::{Error, Result};
use nix::poll::{PollFd, PollFlags, PollTimeout};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// A stop flag that can be waited on. Once signalled it stays readable
/// forever (it is never read), so waiters that arrive late still see it.
#[derive(Debug)]
pub struct StopFd {
    fd: OwnedFd,
    set: AtomicBool,
}

impl StopFd {
    pub fn new() -> Result<StopFd> {
        // SAFETY: eventfd takes no pointers; a non-negative result is a new
        // descriptor that nothing else owns.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(Error::sys(
                "eventfd for the stop signal",
                io::Error::last_os_error(),
            ));
        }
        // SAFETY: `fd` is a fresh descriptor owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(StopFd {
            fd,
            set: AtomicBool::new(false),
        })
    }

    /// Raises the flag and wakes every waiter. Calling it again does nothing.
    pub fn signal(&self) {
        if !self.set.swap(true, Ordering::SeqCst) {
            // Adding 1 to a zero eventfd counter cannot fail (it could only
            // overflow), so there is no error worth reporting.
            let _ = nix::unistd::write(&self.fd, &1u64.to_ne_bytes());
        }
    }

    pub fn is_set(&self) -> bool {
        self.set.load(Ordering::SeqCst)
    }
}

impl AsRawFd for StopFd {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ready {
    Readable,
    Stopped,
}

/// Waits until `fd` is readable (or has an error or hang-up to report on the
/// next read) or `stop` is signalled; a stop wins over readable data.
/// Returns `None` when `timeout` passes first (`None` waits forever).
pub fn wait_readable(
    fd: RawFd,
    stop: &StopFd,
    timeout: Option<Duration>,
) -> io::Result<Option<Ready>> {
    wait_readable_or(fd, [stop, stop], timeout)
}

/// As [`wait_readable`], ending as `Stopped` when either of `stops` is
/// signalled (the caller tells which by [`StopFd::is_set`]).
pub fn wait_readable_or(
    fd: RawFd,
    stops: [&StopFd; 2],
    timeout: Option<Duration>,
) -> io::Result<Option<Ready>> {
    let deadline = timeout.map(|t| Instant::now() + t);
    // SAFETY: the caller keeps `fd` open for the duration of this call.
    let watched = unsafe { BorrowedFd::borrow_raw(fd) };
    loop {
        let poll_timeout = match deadline {
            None => PollTimeout::NONE,
            Some(d) => millis_rounded_up(d.saturating_duration_since(Instant::now())),
        };
        let mut fds = [
            PollFd::new(watched, PollFlags::POLLIN),
            PollFd::new(stops[0].fd.as_fd(), PollFlags::POLLIN),
            PollFd::new(stops[1].fd.as_fd(), PollFlags::POLLIN),
        ];
        // One stop twice is watched once.
        let n = if std::ptr::eq(stops[0], stops[1]) {
            2
        } else {
            3
        };
        match nix::poll::poll(&mut fds[..n], poll_timeout) {
            Ok(0) => return Ok(None),
            Ok(_) => {
                let fd_ev = fds[0].revents().unwrap_or(PollFlags::empty());
                let stopped = fds[1..n].iter().any(|f| {
                    f.revents()
                        .unwrap_or(PollFlags::empty())
                        .contains(PollFlags::POLLIN)
                });
                if stopped {
                    return Ok(Some(Ready::Stopped));
                }
                if fd_ev.contains(PollFlags::POLLNVAL) {
                    return Err(io::Error::from_raw_os_error(libc::EBADF));
                }
                if fd_ev.intersects(PollFlags::POLLIN | PollFlags::POLLERR | PollFlags::POLLHUP) {
                    return Ok(Some(Ready::Readable));
                }
            }
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// Rounds up so a wait never ends before its deadline; clamps to poll's limit.
fn millis_rounded_up(d: Duration) -> PollTimeout {
    let ms = d.as_nanos().div_ceil(1_000_000);
    PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixDatagram;

    #[test]
    fn stop_wakes_and_wins() {
        let stop = StopFd::new().unwrap();
        let (a, b) = UnixDatagram::pair().unwrap();
        let t = Some(Duration::from_millis(20));
        assert_eq!(wait_readable(a.as_raw_fd(), &stop, t).unwrap(), None);
        b.send(b"x").unwrap();
        assert_eq!(
            wait_readable(a.as_raw_fd(), &stop, t).unwrap(),
            Some(Ready::Readable)
        );
        assert!(!stop.is_set());
        stop.signal();
        stop.signal();
        assert!(stop.is_set());
        assert_eq!(
            wait_readable(a.as_raw_fd(), &stop, None).unwrap(),
            Some(Ready::Stopped)
        );
    }

    #[test]
    fn wakes_a_blocked_thread() {
        let stop = std::sync::Arc::new(StopFd::new().unwrap());
        let (a, _b) = UnixDatagram::pair().unwrap();
        let waiter = {
            let stop = stop.clone();
            std::thread::spawn(move || wait_readable(a.as_raw_fd(), &stop, None).unwrap())
        };
        std::thread::sleep(Duration::from_millis(50));
        let started = Instant::now();
        stop.signal();
        assert_eq!(waiter.join().unwrap(), Some(Ready::Stopped));
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn either_of_two_stops_ends_the_wait() {
        let (stop, other) = (StopFd::new().unwrap(), StopFd::new().unwrap());
        let (a, b) = UnixDatagram::pair().unwrap();
        let t = Some(Duration::from_millis(20));
        assert_eq!(
            wait_readable_or(a.as_raw_fd(), [&stop, &other], t).unwrap(),
            None
        );
        b.send(b"x").unwrap();
        assert_eq!(
            wait_readable_or(a.as_raw_fd(), [&stop, &other], t).unwrap(),
            Some(Ready::Readable)
        );
        other.signal();
        assert_eq!(
            wait_readable_or(a.as_raw_fd(), [&stop, &other], None).unwrap(),
            Some(Ready::Stopped)
        );
        assert!(!stop.is_set(), "the other one ended it");
        assert_eq!(
            wait_readable(a.as_raw_fd(), &stop, t).unwrap(),
            Some(Ready::Readable)
        );
    }

    #[test]
    fn timeout_is_not_cut_short() {
        let stop = StopFd::new().unwrap();
        let (a, _b) = UnixDatagram::pair().unwrap();
        let started = Instant::now();
        let r = wait_readable(a.as_raw_fd(), &stop, Some(Duration::from_micros(2500)));
        assert_eq!(r.unwrap(), None);
        assert!(started.elapsed() >= Duration::from_micros(2500));
    }
}
