//! Starting `pipevpnd`'s background copy of itself: a pipe for its "ready"
//! byte, and a child in a session of its own that keeps the pipe's write
//! end. A re-exec, never a bare fork: the parent may already run threads.

use crate::{Error, Result};
use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use nix::sys::stat::{fstat, SFlag};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};

/// A pipe, both ends close-on-exec: (read end, write end).
pub fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| Error::sys("pipe2(O_CLOEXEC)", e.into()))
}

/// Spawns `command` in a new session (no controlling terminal, out of the
/// caller's process group, so a Ctrl-C or a closed terminal does not reach
/// it), with `keep` left open across the exec under the same number.
pub fn spawn_in_new_session(command: &mut Command, keep: BorrowedFd) -> io::Result<Child> {
    let fd = keep.as_raw_fd();
    // SAFETY: between fork and exec the closure only makes two system calls,
    // both async-signal-safe, and touches no memory the parent's other
    // threads could hold locked.
    unsafe {
        command.pre_exec(move || {
            new_session()?;
            keep_across_exec(fd)
        })
    };
    command.spawn()
}

fn new_session() -> io::Result<()> {
    nix::unistd::setsid().map(drop).map_err(io::Error::from)
}

fn keep_across_exec(fd: RawFd) -> io::Result<()> {
    // SAFETY: the descriptor stays open for the whole call (the parent keeps
    // it until the child has started).
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    fcntl(fd, FcntlArg::F_SETFD(FdFlag::empty()))
        .map(drop)
        .map_err(io::Error::from)
}

/// Takes the inherited descriptor `fd` as the write end of a "ready" pipe,
/// checked to be a pipe (a stray number must not get a byte written into
/// some other file), and made close-on-exec again.
pub fn inherited_pipe(fd: RawFd) -> Result<File> {
    let what = || format!("descriptor {fd} (--ready-fd)");
    // SAFETY: fstat reads the descriptor's metadata only; a closed one is EBADF.
    let stat = fstat(unsafe { BorrowedFd::borrow_raw(fd) })
        .map_err(|e| Error::sys(format!("fstat of {}", what()), e.into()))?;
    if SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT != SFlag::S_IFIFO {
        return Err(Error::Input(format!("{} is not a pipe", what())));
    }
    // SAFETY: the descriptor is open (fstat just succeeded), and nothing else
    // in this process owns it: it was inherited for this use alone.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    fcntl(&owned, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))
        .map_err(|e| Error::sys(format!("fcntl(FD_CLOEXEC) on {}", what()), e.into()))?;
    Ok(File::from(owned))
}
