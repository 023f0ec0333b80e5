//! Large bodies in files. The memory tier keeps each body of at least [`MIN_BYTES`] once,
//! in a file mapped read-only for every path that reads bytes; the front door sends it to
//! clients with `sendfile`, as nginx sends a file from the page cache, instead of copying it
//! through a `writev` on every hit.
//!
//! The file is a sealed memfd (it can never change, and lives in RAM only), or, with
//! `memory.body_dir`, an unnamed file (`O_TMPFILE`) in that directory, held through a
//! read-only descriptor. The second is cheaper to send: the kernel reads a filesystem's page
//! cache for `sendfile` in batches, where shared memory is looked up page by page (measured
//! in bench/media.py). Its pages are locked in memory when the process may lock them, so
//! that a hit never waits for the disk; the kernel still writes them out in the background.
//!
//! Each such body holds a descriptor: at the first one the process's `RLIMIT_NOFILE` is
//! raised to its hard limit, and at most half of it goes to bodies, and at most a quarter
//! of `vm.max_map_count` (beyond, bodies are kept in ordinary memory).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;

/// Bodies at least this large are kept in a memory file (smaller ones gain nothing from
/// `sendfile`: its setup costs what copying them does).
pub const MIN_BYTES: usize = 16 * 1024;

/// Descriptors held by bodies now.
static OPEN: AtomicUsize = AtomicUsize::new(0);

/// How many descriptors (and mappings) bodies may hold.
fn cap() -> usize {
    static CAP: OnceLock<usize> = OnceLock::new();
    *CAP.get_or_init(|| {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: plain system calls on a local struct.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
                return 0;
            }
            if lim.rlim_cur < lim.rlim_max {
                let raised = libc::rlimit {
                    rlim_cur: lim.rlim_max,
                    rlim_max: lim.rlim_max,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                    lim = raised;
                }
            }
        }
        // Each body is also a mapping, and a process that reaches `vm.max_map_count` can no
        // longer map anything (its allocator included): bodies take at most a quarter of it.
        let maps = std::fs::read_to_string("/proc/sys/vm/max_map_count")
            .ok()
            .and_then(|t| t.trim().parse::<usize>().ok())
            .unwrap_or(65_530);
        usize::try_from(lim.rlim_cur / 2)
            .unwrap_or(usize::MAX)
            .min(1 << 20)
            .min(maps / 4)
    })
}

/// A sealed, mapped memory file holding one body.
pub struct SharedBody {
    fd: OwnedFd,
    ptr: *mut libc::c_void,
    len: usize,
}

// SAFETY: the mapping is read-only and the file is sealed against writes, shrinking and
// growing, or (an unnamed file) has no writable descriptor left: the bytes never change
// while any thread holds them.
unsafe impl Send for SharedBody {}
unsafe impl Sync for SharedBody {}

impl SharedBody {
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: `ptr` maps `len` readable bytes until `self` is dropped.
        unsafe { std::slice::from_raw_parts(self.ptr.cast::<u8>(), self.len) }
    }
}

impl std::fmt::Debug for SharedBody {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "SharedBody(fd {}, {} bytes)", self.fd(), self.len)
    }
}

impl Drop for SharedBody {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `seal`, unmapped once; the descriptor closes after.
        unsafe { libc::munmap(self.ptr, self.len) };
        OPEN.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The body's bytes as `Bytes`, keeping its file alive.
struct View(Arc<SharedBody>);

impl AsRef<[u8]> for View {
    fn as_ref(&self) -> &[u8] {
        self.0.bytes()
    }
}

/// `data` in a sealed memory file (or, given `dir`, an unnamed file there), and its bytes
/// mapped from there; `None` when it is too small, descriptors are spent or the system
/// refuses (the caller keeps it in memory).
pub fn seal(data: &[u8], dir: Option<&Path>) -> Option<(Bytes, Arc<SharedBody>)> {
    if data.len() < MIN_BYTES {
        return None;
    }
    if OPEN.fetch_add(1, Ordering::Relaxed) >= cap() {
        OPEN.fetch_sub(1, Ordering::Relaxed);
        return None;
    }
    let body = make(data, dir).map(Arc::new);
    match body {
        Some(body) => Some((Bytes::from_owner(View(body.clone())), body)),
        None => {
            OPEN.fetch_sub(1, Ordering::Relaxed);
            None
        }
    }
}

fn make(data: &[u8], dir: Option<&Path>) -> Option<SharedBody> {
    let (fd, seals) = match dir {
        None => (memory_file()?, true),
        Some(dir) => (unnamed_file(dir)?, false),
    };
    write_all(&fd, data)?;
    let fd = if seals {
        let seals =
            libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE | libc::F_SEAL_SEAL;
        // SAFETY: fcntl on a descriptor this function owns.
        if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals) } != 0 {
            return None;
        }
        fd
    } else {
        // Nothing in this process keeps a descriptor that could write the body.
        reopen_read_only(&fd)?
    };
    // SAFETY: maps exactly the file's length, which no descriptor left can change.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            data.len(),
            libc::PROT_READ,
            libc::MAP_SHARED,
            fd.as_raw_fd(),
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        return None;
    }
    if !seals {
        // Resident pages keep `sendfile` off the disk; without the privilege (RLIMIT_MEMLOCK),
        // the kernel may evict them under memory pressure and read them back when sent.
        // SAFETY: locks the mapping just made.
        let _ = unsafe { libc::mlock(ptr, data.len()) };
    }
    Some(SharedBody {
        fd,
        ptr,
        len: data.len(),
    })
}

fn memory_file() -> Option<OwnedFd> {
    // SAFETY: creates a descriptor that the returned value owns.
    let raw = unsafe {
        libc::memfd_create(
            c"rentcache-body".as_ptr(),
            libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
        )
    };
    // SAFETY: `raw` is a new descriptor when non-negative.
    (raw >= 0).then(|| unsafe { OwnedFd::from_raw_fd(raw) })
}

/// A file in `dir` without a name: it is gone when its last descriptor closes, whatever
/// happens to the process.
pub fn unnamed_file(dir: &Path) -> Option<OwnedFd> {
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: opens a descriptor that the returned value owns.
    let raw = unsafe {
        libc::open(
            path.as_ptr(),
            libc::O_TMPFILE | libc::O_RDWR | libc::O_CLOEXEC,
            0o600,
        )
    };
    // SAFETY: `raw` is a new descriptor when non-negative.
    (raw >= 0).then(|| unsafe { OwnedFd::from_raw_fd(raw) })
}

fn reopen_read_only(fd: &OwnedFd) -> Option<OwnedFd> {
    let path = std::ffi::CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd())).ok()?;
    // SAFETY: opens a descriptor that the returned value owns.
    let raw = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    // SAFETY: `raw` is a new descriptor when non-negative.
    (raw >= 0).then(|| unsafe { OwnedFd::from_raw_fd(raw) })
}

fn write_all(fd: &OwnedFd, data: &[u8]) -> Option<()> {
    let mut written = 0;
    while written < data.len() {
        let rest = data.get(written..)?;
        // SAFETY: writes bytes of a live slice to a descriptor this module owns.
        let n = unsafe { libc::write(fd.as_raw_fd(), rest.as_ptr().cast(), rest.len()) };
        if n <= 0 {
            if n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return None;
        }
        written += n as usize;
    }
    Some(())
}

/// Descriptors held by bodies (for stats).
pub fn open_files() -> usize {
    OPEN.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_bodies_read_back_and_refuse_writes() {
        assert!(
            seal(&[1u8; 100], None).is_none(),
            "small bodies stay in memory"
        );
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let before = open_files();
        let (bytes, file) = seal(&data, None).expect("a memory file");
        assert_eq!(&bytes[..], &data[..]);
        assert_eq!(file.len(), data.len());
        assert_eq!(open_files(), before + 1);
        // SAFETY: plain system calls on the file's descriptor.
        let (seals, wrote) = unsafe {
            (
                libc::fcntl(file.fd(), libc::F_GET_SEALS),
                libc::pwrite(file.fd(), b"x".as_ptr().cast(), 1, 0),
            )
        };
        assert_ne!(seals & libc::F_SEAL_WRITE, 0);
        assert_eq!(wrote, -1, "sealed against writes");
        let slice = bytes.slice(10..20);
        drop(bytes);
        drop(file);
        assert_eq!(&slice[..], &data[10..20], "a slice keeps the mapping");
        drop(slice);
        assert_eq!(open_files(), before);
    }

    #[test]
    fn bodies_in_a_directory_are_unnamed_and_read_only() {
        let dir = std::env::temp_dir();
        let data: Vec<u8> = (0..50_000u32).map(|i| (i % 241) as u8).collect();
        let Some((bytes, file)) = seal(&data, Some(&dir)) else {
            // O_TMPFILE is refused by some filesystems; `memory.body_dir` checks at load.
            assert!(unnamed_file(&dir).is_none());
            return;
        };
        assert_eq!(&bytes[..], &data[..]);
        // SAFETY: plain system calls on the file's descriptor.
        let (flags, wrote) = unsafe {
            (
                libc::fcntl(file.fd(), libc::F_GETFL),
                libc::pwrite(file.fd(), b"x".as_ptr().cast(), 1, 0),
            )
        };
        assert_eq!(flags & libc::O_ACCMODE, libc::O_RDONLY);
        assert_eq!(wrote, -1, "the descriptor cannot write");
        let name = std::fs::read_link(format!("/proc/self/fd/{}", file.fd())).unwrap_or_default();
        assert!(
            name.to_string_lossy().ends_with("(deleted)"),
            "no name in the directory: {name:?}"
        );
    }
}
