//! Files pipevpn writes as root under [`RUN_DIR`] and trusts on a later
//! start: the route records of [`crate::routes`] (which make root delete
//! routes) and the remembered endpoints of [`crate::up`] (which make it send
//! handshakes to an address). So nobody else may plant or change one:
//!
//! - directories are created 0700 and files 0600, each file written to a
//!   temporary one opened with `O_NOFOLLOW | O_CREAT | O_EXCL`, then renamed
//!   over the old one (a crash never leaves half a file);
//! - a directory or file that is a symbolic link, of the wrong type, not
//!   owned by the user pipevpn runs as (root), or writable by group or
//!   others is refused with an error naming it, before anything in it is
//!   used;
//! - files are kept per network namespace in `RUN_DIR/<inode>/`, so the next
//!   start in the same namespace finds them. The kernel gives a freed inode
//!   number to a later namespace, so each file also names its namespace by
//!   its cookie (`SO_NETNS_COOKIE`, never reused while the system runs), and
//!   a file from an earlier namespace is told apart by that. On a kernel
//!   without netns cookies (before 5.14) the inode is all there is.

use crate::sys::{effective_uid, netns_cookie};
use crate::{Error, Result};
use std::fs::{self, DirBuilder, Metadata, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Where pipevpn keeps its records.
pub const RUN_DIR: &str = "/run/pipevpn";

/// Records are small (a route line is under 80 bytes); anything longer than
/// this is not one of ours.
const MAX_RECORD: u64 = 16 << 20;

/// The network namespace of the calling thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Netns {
    /// Inode of `/proc/thread-self/ns/net`: the directory key.
    pub inode: u64,
    /// `SO_NETNS_COOKIE`, `None` on a kernel without it.
    pub cookie: Option<u64>,
}

impl Netns {
    /// The calling thread's namespace. (`/proc/self` would be the main
    /// thread's, which differs in a thread that switched namespaces.)
    pub fn current() -> Result<Netns> {
        let ns = "/proc/thread-self/ns/net";
        let inode = fs::metadata(ns)
            .map_err(|e| Error::sys(format!("stat {ns}"), e))?
            .ino();
        Ok(Netns {
            inode,
            cookie: netns_cookie()?,
        })
    }

    /// The directory of this namespace's records under `run_dir`.
    pub fn dir(&self, run_dir: &Path) -> PathBuf {
        run_dir.join(self.inode.to_string())
    }

    /// Whether a record that names `recorded` (its `netns` value) was
    /// written in this namespace.
    pub fn wrote(&self, recorded: Option<u64>) -> bool {
        self.cookie == recorded
    }
}

/// The value of a record's `netns` line: the cookie, or `-` without one.
pub fn render_cookie(cookie: Option<u64>) -> String {
    cookie.map_or("-".to_string(), |c| c.to_string())
}

/// Parses [`render_cookie`]'s form back.
pub fn parse_cookie(value: &str) -> std::result::Result<Option<u64>, String> {
    match value {
        "-" => Ok(None),
        v => v
            .parse()
            .map(Some)
            .map_err(|_| format!("bad netns cookie '{v}'")),
    }
}

fn refused(path: &Path, why: &str) -> Error {
    Error::Input(format!(
        "{}: {why}; pipevpn does not trust it (it writes its records as root, mode 0600, \
         in a 0700 directory): remove it by hand, and find out who put it there",
        path.display()
    ))
}

/// Why `meta` (from lstat or fstat) is not a file or directory of ours.
fn distrust(meta: &Metadata, dir: bool) -> Option<String> {
    let ft = meta.file_type();
    if ft.is_symlink() {
        return Some("it is a symbolic link".into());
    }
    if dir && !ft.is_dir() {
        return Some("it is not a directory".into());
    }
    if !dir && !ft.is_file() {
        return Some("it is not a regular file".into());
    }
    let me = effective_uid();
    if meta.uid() != me {
        return Some(format!("it is owned by uid {}, not {me}", meta.uid()));
    }
    if meta.mode() & 0o022 != 0 {
        return Some(format!(
            "it is writable by group or others (mode {:o})",
            meta.mode() & 0o7777
        ));
    }
    None
}

/// Checks the directory `dir` (which must exist) and tightens it to 0700
/// (an older pipevpn made it with the umask's 0755).
fn check_dir(dir: &Path) -> Result<()> {
    let meta =
        fs::symlink_metadata(dir).map_err(|e| Error::sys(format!("stat {}", dir.display()), e))?;
    if let Some(why) = distrust(&meta, true) {
        return Err(refused(dir, &why));
    }
    if meta.mode() & 0o077 != 0 {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .map_err(|e| Error::sys(format!("chmod 0700 {}", dir.display()), e))?;
    }
    Ok(())
}

/// Creates `dir` (0700) and its parent if missing, and checks both.
fn private_dir(dir: &Path) -> Result<()> {
    for d in dir.parent().into_iter().chain([dir]) {
        match DirBuilder::new().mode(0o700).create(d) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
                return Err(Error::sys(format!("creating {}", d.display()), e))
            }
            _ => check_dir(d)?,
        }
    }
    Ok(())
}

/// This namespace's directory under `run_dir`, made and checked as the
/// records' is: for a file that must not clash with another namespace's
/// (the control socket, when its usual path is taken).
pub fn netns_dir(run_dir: &Path) -> Result<PathBuf> {
    let dir = Netns::current()?.dir(run_dir);
    private_dir(&dir)?;
    Ok(dir)
}

/// Replaces the file at `path` with `text` in one step, creating its
/// directories as needed (see the module's rules).
pub fn write(path: &Path, text: &str) -> Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| Error::Input(format!("{}: no directory", path.display())))?;
    private_dir(dir)?;
    replace_file(path, text)
}

/// Replaces the file at `path` with `text` in one step, mode 0600: written
/// to `path.tmp`, opened with `O_NOFOLLOW | O_CREAT | O_EXCL` (a planted
/// link is never written through), then renamed over `path`. Leaves the
/// directory as it is (`up` also writes a config back with it). The text
/// is synced before the rename, so a crash leaves the old file or the new.
pub fn replace_file(path: &Path, text: &str) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    // A crash may have left one; unlink never follows a symbolic link.
    match fs::remove_file(&tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            return Err(Error::sys(format!("removing {}", tmp.display()), e))
        }
        _ => {}
    }
    let written = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&tmp)
        .and_then(|mut f| f.write_all(text.as_bytes()).and_then(|()| f.sync_all()));
    written.map_err(|e| Error::sys(format!("writing {}", tmp.display()), e))?;
    fs::rename(&tmp, path).map_err(|e| Error::sys(format!("renaming to {}", path.display()), e))
}

/// The text of the file at `path`, `None` if it (or its directory) does not
/// exist; refused if the file or its directory is not to be trusted (see
/// the module's rules).
pub fn read(path: &Path) -> Result<Option<String>> {
    let stat = |p: &Path| match fs::symlink_metadata(p) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        other => other
            .map(Some)
            .map_err(|e| Error::sys(format!("stat {}", p.display()), e)),
    };
    // RUN_DIR, then the namespace's directory.
    let dir = path.parent();
    for d in dir.and_then(Path::parent).into_iter().chain(dir) {
        match stat(d)? {
            None => return Ok(None),
            Some(meta) => {
                if let Some(why) = distrust(&meta, true) {
                    return Err(refused(d, &why));
                }
            }
        }
    }
    // lstat first, so nothing but a regular file is ever opened; then the
    // same checks on what was opened, in case it was swapped in between.
    let Some(meta) = stat(path)? else {
        return Ok(None);
    };
    if let Some(why) = distrust(&meta, false) {
        return Err(refused(path, &why));
    }
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path);
    let file = match file {
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(refused(path, "it is a symbolic link"))
        }
        other => other.map_err(|e| Error::sys(format!("opening {}", path.display()), e))?,
    };
    let meta = file
        .metadata()
        .map_err(|e| Error::sys(format!("fstat {}", path.display()), e))?;
    if let Some(why) = distrust(&meta, false) {
        return Err(refused(path, &why));
    }
    let mut text = String::new();
    file.take(MAX_RECORD)
        .read_to_string(&mut text)
        .map_err(|e| Error::sys(format!("reading {}", path.display()), e))?;
    Ok(Some(text))
}

/// Removes the file at `path` (gone already is fine), and its directory
/// once no other file is left in it, so a clean exit leaves nothing behind.
pub fn remove(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            return Err(Error::sys(format!("removing {}", path.display()), e))
        }
        _ => {}
    }
    if let Some(dir) = path.parent() {
        // Fails, as it should, while another tunnel's record is there.
        let _ = fs::remove_dir(dir);
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// A fresh directory for one test, removed when dropped.
    pub(crate) struct TestDir(pub PathBuf);

    impl TestDir {
        pub(crate) fn new(test: &str) -> TestDir {
            let dir = std::env::temp_dir().join(format!("pipevpn-{test}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            TestDir(dir)
        }
    }

    impl Drop for TestDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn mode(p: &Path) -> u32 {
        fs::symlink_metadata(p).unwrap().mode() & 0o7777
    }

    #[test]
    fn files_are_private_and_directories_0700() {
        let t = TestDir::new("rundir-modes");
        let path = t.0.join("7/pv0.routes");
        write(&path, "one\n").unwrap();
        assert_eq!(mode(&t.0), 0o700);
        assert_eq!(mode(&t.0.join("7")), 0o700);
        assert_eq!(mode(&path), 0o600);
        // A leftover temporary file is replaced, not followed or kept.
        fs::write(t.0.join("7/pv0.routes.tmp"), "junk").unwrap();
        write(&path, "two\n").unwrap();
        assert_eq!(read(&path).unwrap().as_deref(), Some("two\n"));
        assert!(!t.0.join("7/pv0.routes.tmp").exists());
        // An older pipevpn's 0755 directory is tightened.
        fs::set_permissions(t.0.join("7"), fs::Permissions::from_mode(0o755)).unwrap();
        write(&path, "three\n").unwrap();
        assert_eq!(mode(&t.0.join("7")), 0o700);
        assert_eq!(read(&t.0.join("7/absent")).unwrap(), None);
        assert_eq!(read(&t.0.join("8/absent")).unwrap(), None);
    }

    #[test]
    fn a_planted_temporary_symlink_is_not_followed() {
        let t = TestDir::new("rundir-tmp-link");
        let victim = t.0.join("victim");
        fs::create_dir_all(t.0.join("7")).unwrap();
        fs::set_permissions(&t.0, fs::Permissions::from_mode(0o700)).unwrap();
        fs::write(&victim, "root's file\n").unwrap();
        symlink(&victim, t.0.join("7/pv0.routes.tmp")).unwrap();
        write(&t.0.join("7/pv0.routes"), "record\n").unwrap();
        assert_eq!(fs::read_to_string(&victim).unwrap(), "root's file\n");
        assert_eq!(
            fs::read_to_string(t.0.join("7/pv0.routes")).unwrap(),
            "record\n"
        );
    }

    /// `read` refuses `path` with a message naming `named` and saying `why`.
    fn assert_refused(path: &Path, named: &Path, why: &str) {
        let err = read(path).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, Error::Input(_)), "{err:?}");
        assert!(
            msg.starts_with(&format!("{}: {why}", named.display())),
            "{msg}"
        );
    }

    #[test]
    fn untrusted_files_are_refused() {
        let t = TestDir::new("rundir-refused");
        let path = t.0.join("7/pv0.routes");
        write(&path, "record\n").unwrap();
        let other = t.0.join("7/other");
        fs::write(&other, "pid 1\n").unwrap();

        fs::remove_file(&path).unwrap();
        symlink(&other, &path).unwrap();
        assert_refused(&path, &path, "it is a symbolic link");

        fs::remove_file(&path).unwrap();
        fs::create_dir(&path).unwrap();
        assert_refused(&path, &path, "it is not a regular file");
        fs::remove_dir(&path).unwrap();

        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::S_IRWXU).unwrap();
        assert_refused(&path, &path, "it is not a regular file");
        fs::remove_file(&path).unwrap();

        write(&path, "record\n").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o620)).unwrap();
        assert_refused(&path, &path, "it is writable by group or others (mode 620)");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o602)).unwrap();
        assert_refused(&path, &path, "it is writable by group or others (mode 602)");

        write(&path, "record\n").unwrap();
        // Needs root, as the tests do.
        std::os::unix::fs::chown(&path, Some(65534), None).expect("chown needs root");
        assert_refused(&path, &path, "it is owned by uid 65534");
        fs::remove_file(&path).unwrap();

        // The directory is checked too.
        write(&path, "record\n").unwrap();
        fs::set_permissions(t.0.join("7"), fs::Permissions::from_mode(0o777)).unwrap();
        assert_refused(&path, &t.0.join("7"), "it is writable by group or others");
        assert!(write(&path, "x").is_err());
        fs::set_permissions(t.0.join("7"), fs::Permissions::from_mode(0o700)).unwrap();
        let linked = t.0.join("8");
        symlink(t.0.join("7"), &linked).unwrap();
        assert_refused(&linked.join("pv0.routes"), &linked, "it is a symbolic link");
        assert!(write(&linked.join("pv0.routes"), "x").is_err());
        // And so is the run directory above it.
        let run_link = t.0.join("run");
        symlink(&t.0, &run_link).unwrap();
        let via_link = run_link.join("7/pv0.routes");
        assert_refused(&via_link, &run_link, "it is a symbolic link");
        assert!(write(&via_link, "x").is_err());
    }

    #[test]
    fn namespace_cookies_tell_namespaces_apart() {
        let here = Netns::current().unwrap();
        // Linux 5.14 and later; the development and CI kernels are newer.
        let cookie = here
            .cookie
            .expect("SO_NETNS_COOKIE needs Linux 5.14 or later");
        assert!(here.wrote(Some(cookie)));
        assert!(!here.wrote(Some(cookie + 1)));
        assert!(!here.wrote(None));
        let old_kernel = Netns {
            inode: here.inode,
            cookie: None,
        };
        assert!(old_kernel.wrote(None));
        for c in [None, Some(0), Some(u64::MAX)] {
            assert_eq!(parse_cookie(&render_cookie(c)), Ok(c));
        }
        assert!(parse_cookie("").is_err() && parse_cookie("x").is_err());
    }

    #[test]
    fn remove_takes_the_empty_directory_along() {
        let t = TestDir::new("rundir-remove");
        let (mine, other) = (t.0.join("1/pv1.routes"), t.0.join("1/pv2.routes"));
        write(&mine, "").unwrap();
        write(&other, "").unwrap();
        remove(&mine).unwrap();
        assert!(other.exists(), "a directory in use stays");
        remove(&other).unwrap();
        assert!(!t.0.join("1").exists());
        remove(&other).unwrap();
    }
}
