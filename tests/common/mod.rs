//! What the test files that need root share.

use pipevpn::sys::iface::set_up;
use std::os::unix::fs::MetadataExt;

/// Runs `f` on a new thread inside a new network namespace with `lo` up.
pub fn in_netns<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    assert!(
        // /proc/self belongs to the effective uid.
        std::fs::metadata("/proc/self").unwrap().uid() == 0,
        "this test needs root: it runs in a network namespace of its own"
    );
    std::thread::spawn(move || {
        // SAFETY: unshare takes no pointers; it moves only this thread.
        let r = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(
            r,
            0,
            "unshare(CLONE_NEWNET): {}",
            std::io::Error::last_os_error()
        );
        set_up("lo").unwrap();
        f()
    })
    .join()
    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}
