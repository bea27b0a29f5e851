//! userfaultfd with `UFFD_FEATURE_MOVE`: open, register, and UFFDIO_MOVE.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::{last_err, Mapping};

// include/uapi/linux/userfaultfd.h
const UFFD_API: u64 = 0xAA;
pub const UFFD_FEATURE_MOVE: u64 = 1 << 16;
const UFFDIO_REGISTER_MODE_MISSING: u64 = 1;
const fn iowr(nr: u64, size: u64) -> u64 {
    (3 << 30) | (size << 16) | (0xAA << 8) | nr
}
const UFFDIO_API: u64 = iowr(0x3F, 24);
const UFFDIO_REGISTER: u64 = iowr(0x00, 32);
const UFFDIO_MOVE: u64 = iowr(0x05, 40);

#[repr(C)]
#[derive(Default)]
struct UffdioApi {
    api: u64,
    features: u64,
    ioctls: u64,
}

#[repr(C)]
#[derive(Default)]
struct UffdioRegister {
    start: u64,
    len: u64,
    mode: u64,
    ioctls: u64,
}

#[repr(C)]
#[derive(Default)]
struct UffdioMove {
    dst: u64,
    src: u64,
    len: u64,
    mode: u64,
    moved: i64,
}

/// A userfaultfd after the API handshake; `features` is what the kernel
/// granted.
pub struct Uffd {
    fd: OwnedFd,
    pub features: u64,
}

impl Uffd {
    pub fn open(features: u64) -> std::io::Result<Uffd> {
        // SAFETY: plain syscall; the result is checked.
        let fd =
            unsafe { libc::syscall(libc::SYS_userfaultfd, libc::O_CLOEXEC | libc::O_NONBLOCK) };
        if fd < 0 {
            return Err(last_err("userfaultfd"));
        }
        // SAFETY: a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        let mut api = UffdioApi {
            api: UFFD_API,
            features,
            ioctls: 0,
        };
        // SAFETY: UFFDIO_API reads and writes a struct uffdio_api we own.
        if unsafe { libc::ioctl(fd.as_raw_fd(), UFFDIO_API as _, &mut api) } != 0 {
            return Err(last_err("UFFDIO_API"));
        }
        Ok(Uffd {
            fd,
            features: api.features,
        })
    }

    /// Whether this kernel has UFFDIO_MOVE (Linux 6.8 and later).
    pub fn move_supported() -> std::io::Result<bool> {
        Ok(Uffd::open(0)?.features & UFFD_FEATURE_MOVE != 0)
    }

    /// Registers `m` for missing-page faults (UFFDIO_MOVE needs a
    /// registered destination).
    pub fn register(&self, m: &Mapping) -> std::io::Result<()> {
        let mut r = UffdioRegister {
            start: m.addr() as u64,
            len: m.len() as u64,
            mode: UFFDIO_REGISTER_MODE_MISSING,
            ioctls: 0,
        };
        // SAFETY: UFFDIO_REGISTER on our own mapping with a struct we own.
        if unsafe { libc::ioctl(self.fd.as_raw_fd(), UFFDIO_REGISTER as _, &mut r) } != 0 {
            return Err(last_err("UFFDIO_REGISTER"));
        }
        Ok(())
    }

    /// One UFFDIO_MOVE of `len` bytes: the bytes it moved (a call can move
    /// part of the range and then fail), and the errno if it failed.
    pub fn move_range(&self, dst: usize, src: usize, len: usize) -> (usize, Option<i32>) {
        let mut mv = UffdioMove {
            dst: dst as u64,
            src: src as u64,
            len: len as u64,
            mode: 0,
            moved: 0,
        };
        // SAFETY: UFFDIO_MOVE between two mappings of this process; the
        // kernel validates both ranges.
        let rc = unsafe { libc::ioctl(self.fd.as_raw_fd(), UFFDIO_MOVE as _, &mut mv) };
        // `moved` holds a negative errno when nothing was moved.
        let moved = mv.moved.max(0) as usize;
        if rc == 0 {
            (moved, None)
        } else {
            let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
            (moved, Some(errno))
        }
    }
}
