//! File operations as plain syscalls in the calling thread: how the readiness backends run
//! them, inline in the loop's thread or in a file worker (`readiness/workers.rs`; readiness
//! cannot wait on regular files), and how io_uring runs an opcode the kernel lacks. Each
//! returns the result as the kernel's completion would: `>= 0`, or `-errno`.
//!
//! Two of io_uring's conventions hold here too: offset `u64::MAX` (-1) reads or writes at
//! the file position, and `openat` ignores `dir` for an absolute path, as openat(2) does.
#![allow(unsafe_code)]

use std::ffi::CStr;
use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{BorrowedFd, IntoRawFd, RawFd};

use rustix::fs::{AtFlags, Mode, OFlags};
use rustix::io::Errno;

use crate::filebuf::{Bytes, BytesList};
use crate::operation::{Args, RawStat};
use crate::outbuf::GATHER_MAX;
use crate::stats::Stats;

/// Whether `args` is a file operation [`perform`] runs.
pub(crate) fn is_file(args: &Args) -> bool {
    matches!(
        args,
        Args::Read { .. }
            | Args::Write { .. }
            | Args::ReadV { .. }
            | Args::WriteV { .. }
            | Args::Fsync { .. }
            | Args::Fallocate { .. }
            | Args::Ftruncate { .. }
            | Args::Statx { .. }
            | Args::Openat { .. }
            | Args::Renameat { .. }
            | Args::Unlinkat { .. }
            | Args::Mkdirat { .. }
    )
}

/// Borrows a caller's descriptor number for one syscall.
fn borrow(fd: RawFd) -> BorrowedFd<'static> {
    assert!(fd >= 0 || fd == libc::AT_FDCWD);
    // SAFETY: the borrow only carries the number into one syscall; if the caller closed the
    // descriptor the kernel answers EBADF. Nothing is read through it in userspace.
    unsafe { BorrowedFd::borrow_raw(fd) }
}

/// A descriptor the operation may use: open-looking, else `EBADF` (a negative number other
/// than `AT_FDCWD` is never open; rustix must not be handed one).
fn fd_or_ebadf(fd: RawFd, dir: bool) -> Result<BorrowedFd<'static>, i32> {
    if fd >= 0 || (dir && fd == libc::AT_FDCWD) {
        Ok(borrow(fd))
    } else {
        Err(-libc::EBADF)
    }
}

/// A directory for a path: `path` absolute makes `dir` irrelevant (openat(2) ignores it).
fn dir_for(dir: RawFd, path: &CStr) -> Result<BorrowedFd<'static>, i32> {
    if path.to_bytes().first() == Some(&b'/') {
        return Ok(borrow(libc::AT_FDCWD));
    }
    fd_or_ebadf(dir, true)
}

fn result(done: Result<usize, Errno>) -> i32 {
    match done {
        Ok(n) => i32::try_from(n).expect("lengths are clamped to i32::MAX"),
        Err(errno) => -errno.raw_os_error(),
    }
}

fn unit(done: Result<(), Errno>) -> i32 {
    result(done.map(|()| 0))
}

/// Runs `call`, repeating it on EINTR (which never escapes the layer), counting syscalls.
pub(crate) fn retry<T>(
    stats: &mut Stats,
    mut call: impl FnMut() -> Result<T, Errno>,
) -> Result<T, Errno> {
    loop {
        stats.syscalls += 1;
        match call() {
            Err(Errno::INTR) => continue,
            other => return other,
        }
    }
}

/// Performs the file operation `args` as io_uring's opcode would, for an opcode the kernel
/// lacks: the same as [`perform`], except that a vectored read or write on a descriptor
/// without offsets (a pipe, a socket) ignores the offset, as the kernel's `READV`/`WRITEV`
/// do, where `preadv2`/`pwritev2` answer `ESPIPE`.
#[cfg(target_os = "linux")]
pub(crate) fn perform_as_uring(args: &mut Args, stats: &mut Stats) -> i32 {
    let result = perform(args, stats);
    if result != -libc::ESPIPE {
        return result;
    }
    match args {
        Args::ReadV { offset, .. } | Args::WriteV { offset, .. } if *offset != OFFSET_CURRENT => {
            let asked = std::mem::replace(offset, OFFSET_CURRENT);
            let result = perform(args, stats);
            let (Args::ReadV { offset, .. } | Args::WriteV { offset, .. }) = args else {
                unreachable!("the same operation")
            };
            *offset = asked;
            result
        }
        _ => result,
    }
}

/// Performs the file operation `args` (see [`is_file`]) and returns its result.
pub(crate) fn perform(args: &mut Args, stats: &mut Stats) -> i32 {
    let done = match args {
        Args::Read { fd, buf, offset } => {
            fd_or_ebadf(*fd, false).map(|fd| read(fd, buf, *offset, stats))
        }
        Args::Write { fd, buf, offset } => {
            fd_or_ebadf(*fd, false).map(|fd| write(fd, buf, *offset, stats))
        }
        Args::ReadV {
            fd,
            bufs,
            offset,
            flags,
        } => fd_or_ebadf(*fd, false).map(|fd| read_vectored(fd, bufs, *offset, *flags, stats)),
        Args::WriteV {
            fd,
            bufs,
            offset,
            flags,
        } => fd_or_ebadf(*fd, false).map(|fd| write_vectored(fd, bufs, *offset, *flags, stats)),
        Args::Fsync { fd, datasync } => {
            fd_or_ebadf(*fd, false).map(|fd| unit(retry(stats, || sync(fd, *datasync))))
        }
        Args::Fallocate {
            fd,
            mode,
            offset,
            len,
        } => fd_or_ebadf(*fd, false).map(|fd| fallocate(fd, *mode, *offset, *len, stats)),
        Args::Ftruncate { fd, len } => {
            fd_or_ebadf(*fd, false).map(|fd| unit(retry(stats, || rustix::fs::ftruncate(fd, *len))))
        }
        _ => perform_at(args, stats),
    };
    done.unwrap_or_else(|ebadf| ebadf)
}

/// The operations on paths.
fn perform_at(args: &mut Args, stats: &mut Stats) -> Result<i32, i32> {
    Ok(match args {
        Args::Statx {
            dir,
            path,
            flags,
            out,
        } => statx(dir_for(*dir, path)?, path, *flags, out, stats),
        Args::Openat {
            dir,
            path,
            flags,
            mode,
        } => openat(dir_for(*dir, path)?, path, *flags, *mode, stats),
        Args::Renameat {
            old_dir,
            old_path,
            new_dir,
            new_path,
            flags,
        } => {
            let old_dir = dir_for(*old_dir, old_path)?;
            let new_dir = dir_for(*new_dir, new_path)?;
            unit(retry(stats, || {
                rename(old_dir, old_path, new_dir, new_path, *flags)
            }))
        }
        Args::Unlinkat { dir, path, flags } => {
            let dir = dir_for(*dir, path)?;
            let flags = AtFlags::from_bits_retain(*flags as _);
            unit(retry(stats, || rustix::fs::unlinkat(dir, &**path, flags)))
        }
        Args::Mkdirat { dir, path, mode } => {
            let dir = dir_for(*dir, path)?;
            let mode = Mode::from_bits_retain(*mode as _);
            unit(retry(stats, || rustix::fs::mkdirat(dir, &**path, mode)))
        }
        other => unreachable!("{} is not a file operation", other.label()),
    })
}

/// At most `i32::MAX` bytes, so that a count fits the result.
fn clamp<T>(slice: &mut [T]) -> &mut [T] {
    let len = slice.len().min(i32::MAX as usize);
    &mut slice[..len]
}

/// The offset that means "the file position": `pread`/`pwrite` take no -1, so `read(2)` and
/// `write(2)` stand in, using and advancing the position as io_uring does for an offset of
/// -1 (`u64::MAX`).
const OFFSET_CURRENT: u64 = u64::MAX;

/// `pread` at `offset`, or `read` at the file position for [`OFFSET_CURRENT`].
fn read(fd: BorrowedFd<'_>, buf: &mut Bytes, offset: u64, stats: &mut Stats) -> i32 {
    let spare = clamp(buf.spare());
    let len_max = spare.len();
    let read = if offset == OFFSET_CURRENT {
        retry(stats, || {
            rustix::io::read(fd, &mut *spare).map(|(init, _)| init.len())
        })
    } else {
        retry(stats, || {
            rustix::io::pread(fd, &mut *spare, offset).map(|(init, _)| init.len())
        })
    };
    assert!(read.is_err() || read.is_ok_and(|n| n <= len_max));
    result(read)
}

/// `pwrite` at `offset`, or `write` at the file position for [`OFFSET_CURRENT`].
fn write(fd: BorrowedFd<'_>, buf: &Bytes, offset: u64, stats: &mut Stats) -> i32 {
    let filled = buf.filled();
    let filled = &filled[..filled.len().min(i32::MAX as usize)];
    let written = if offset == OFFSET_CURRENT {
        retry(stats, || rustix::io::write(fd, filled))
    } else {
        retry(stats, || rustix::io::pwrite(fd, filled, offset))
    };
    assert!(written.is_err() || written.is_ok_and(|n| n <= filled.len()));
    result(written)
}

/// `preadv2` (Linux) or `preadv` into the spare capacities of the first `GATHER_MAX`
/// buffers.
fn read_vectored(
    fd: BorrowedFd<'_>,
    bufs: &mut BytesList,
    offset: u64,
    flags: i32,
    stats: &mut Stats,
) -> i32 {
    let n = bufs.len().min(GATHER_MAX);
    let mut slices: [MaybeUninit<IoSliceMut<'_>>; GATHER_MAX] =
        [const { MaybeUninit::uninit() }; GATHER_MAX];
    let mut total = 0_usize;
    for (i, slice) in slices.iter_mut().enumerate().take(n) {
        let (ptr, len) = bufs.spare_raw(i);
        let len = len.min(i32::MAX as usize - total);
        total += len;
        // SAFETY: `ptr..ptr + len` is buffer `i`'s spare capacity, which nothing else
        // borrows while this call runs (the loop holds the operation's arguments); the
        // kernel only writes bytes there, and `BytesList::grow` takes them in afterwards.
        slice.write(IoSliceMut::new(unsafe {
            std::slice::from_raw_parts_mut(ptr, len)
        }));
    }
    // SAFETY: the first `n` slices were written above.
    let slices = unsafe { std::slice::from_raw_parts_mut(slices.as_mut_ptr().cast(), n) };
    result(retry(stats, || preadv(fd, slices, offset, flags)))
}

/// `pwritev2` (Linux) or `pwritev` of the first `GATHER_MAX` buffers.
fn write_vectored(
    fd: BorrowedFd<'_>,
    bufs: &BytesList,
    offset: u64,
    flags: i32,
    stats: &mut Stats,
) -> i32 {
    let n = bufs.len().min(GATHER_MAX);
    let mut slices = [IoSlice::new(&[]); GATHER_MAX];
    let mut total = 0_usize;
    for (i, slice) in slices.iter_mut().enumerate().take(n) {
        let (ptr, len) = bufs.filled_raw(i);
        let len = len.min(i32::MAX as usize - total);
        total += len;
        // SAFETY: `ptr..ptr + len` is (a prefix of) buffer `i`'s bytes, held by the loop
        // and unchanged while this call reads them.
        *slice = IoSlice::new(unsafe { std::slice::from_raw_parts(ptr, len) });
    }
    result(retry(stats, || pwritev(fd, &slices[..n], offset, flags)))
}

#[cfg(target_os = "linux")]
fn preadv(
    fd: BorrowedFd<'_>,
    bufs: &mut [IoSliceMut<'_>],
    offset: u64,
    flags: i32,
) -> Result<usize, Errno> {
    let flags = rustix::io::ReadWriteFlags::from_bits_retain(flags as _);
    rustix::io::preadv2(fd, bufs, offset, flags)
}

#[cfg(target_os = "linux")]
fn pwritev(
    fd: BorrowedFd<'_>,
    bufs: &[IoSlice<'_>],
    offset: u64,
    flags: i32,
) -> Result<usize, Errno> {
    let flags = rustix::io::ReadWriteFlags::from_bits_retain(flags as _);
    rustix::io::pwritev2(fd, bufs, offset, flags)
}

/// No `RWF_*` flags off Linux; offset -1 is the file position, as on Linux.
#[cfg(not(target_os = "linux"))]
fn preadv(
    fd: BorrowedFd<'_>,
    bufs: &mut [IoSliceMut<'_>],
    offset: u64,
    flags: i32,
) -> Result<usize, Errno> {
    if flags != 0 {
        return Err(Errno::OPNOTSUPP);
    }
    if offset == OFFSET_CURRENT {
        return rustix::io::readv(fd, bufs);
    }
    rustix::io::preadv(fd, bufs, offset)
}

/// No `RWF_*` flags off Linux; offset -1 is the file position, as on Linux.
#[cfg(not(target_os = "linux"))]
fn pwritev(
    fd: BorrowedFd<'_>,
    bufs: &[IoSlice<'_>],
    offset: u64,
    flags: i32,
) -> Result<usize, Errno> {
    if flags != 0 {
        return Err(Errno::OPNOTSUPP);
    }
    if offset == OFFSET_CURRENT {
        return rustix::io::writev(fd, bufs);
    }
    rustix::io::pwritev(fd, bufs, offset)
}

#[cfg(not(target_vendor = "apple"))]
fn sync(fd: BorrowedFd<'_>, datasync: bool) -> Result<(), Errno> {
    match datasync {
        true => rustix::fs::fdatasync(fd),
        false => rustix::fs::fsync(fd),
    }
}

/// macOS has no `fdatasync`: both are `fsync`.
#[cfg(target_vendor = "apple")]
fn sync(fd: BorrowedFd<'_>, _datasync: bool) -> Result<(), Errno> {
    rustix::fs::fsync(fd)
}

fn fallocate(fd: BorrowedFd<'_>, mode: i32, offset: u64, len: u64, stats: &mut Stats) -> i32 {
    #[cfg(not(target_os = "linux"))]
    if mode != 0 {
        return -libc::EOPNOTSUPP;
    }
    let mode = rustix::fs::FallocateFlags::from_bits_retain(mode as _);
    unit(retry(stats, || {
        rustix::fs::fallocate(fd, mode, offset, len)
    }))
}

/// `renameat2(2)` with the caller's flags as they are (`RENAME_NOREPLACE`,
/// `RENAME_EXCHANGE`, `RENAME_WHITEOUT`): the kernel judges them, as io_uring's opcode does.
#[cfg(target_os = "linux")]
fn rename(
    old_dir: BorrowedFd<'_>,
    old_path: &CStr,
    new_dir: BorrowedFd<'_>,
    new_path: &CStr,
    flags: u32,
) -> Result<(), Errno> {
    let flags = rustix::fs::RenameFlags::from_bits_retain(flags);
    rustix::fs::renameat_with(old_dir, old_path, new_dir, new_path, flags)
}

/// `renameatx_np`: `RENAME_NOREPLACE` is its `RENAME_EXCL`; other flags are Linux's.
#[cfg(target_vendor = "apple")]
fn rename(
    old_dir: BorrowedFd<'_>,
    old_path: &CStr,
    new_dir: BorrowedFd<'_>,
    new_path: &CStr,
    flags: u32,
) -> Result<(), Errno> {
    let flags = match flags {
        0 => rustix::fs::RenameFlags::empty(),
        crate::RENAME_NOREPLACE => rustix::fs::RenameFlags::NOREPLACE,
        _ => return Err(Errno::INVAL),
    };
    rustix::fs::renameat_with(old_dir, old_path, new_dir, new_path, flags)
}

#[cfg(not(any(target_os = "linux", target_vendor = "apple")))]
fn rename(
    old_dir: BorrowedFd<'_>,
    old_path: &CStr,
    new_dir: BorrowedFd<'_>,
    new_path: &CStr,
    flags: u32,
) -> Result<(), Errno> {
    match flags {
        0 => rustix::fs::renameat(old_dir, old_path, new_dir, new_path),
        crate::RENAME_NOREPLACE => Err(Errno::OPNOTSUPP),
        _ => Err(Errno::INVAL),
    }
}

fn openat(dir: BorrowedFd<'_>, path: &CStr, flags: i32, mode: u32, stats: &mut Stats) -> i32 {
    let flags = OFlags::from_bits_retain(flags as _) | OFlags::CLOEXEC;
    let mode = Mode::from_bits_retain(mode as _);
    let opened = retry(stats, || rustix::fs::openat(dir, path, flags, mode));
    result(opened.map(|fd| fd.into_raw_fd() as usize))
}

#[cfg(target_os = "linux")]
fn statx(
    dir: BorrowedFd<'_>,
    path: &CStr,
    flags: i32,
    out: &mut RawStat,
    stats: &mut Stats,
) -> i32 {
    use rustix::fs::StatxFlags;
    let flags = AtFlags::from_bits_retain(flags as _);
    let mask = StatxFlags::BASIC_STATS | StatxFlags::DIOALIGN;
    match retry(stats, || rustix::fs::statx(dir, path, flags, mask)) {
        Ok(found) => {
            out.stx_mask = found.stx_mask;
            out.stx_size = found.stx_size;
            out.stx_mode = found.stx_mode;
            out.stx_ino = found.stx_ino;
            out.stx_nlink = found.stx_nlink;
            out.stx_blocks = found.stx_blocks;
            out.stx_blksize = found.stx_blksize;
            out.stx_dio_mem_align = found.stx_dio_mem_align;
            out.stx_dio_offset_align = found.stx_dio_offset_align;
            0
        }
        Err(errno) => -errno.raw_os_error(),
    }
}

#[cfg(not(target_os = "linux"))]
fn statx(
    dir: BorrowedFd<'_>,
    path: &CStr,
    flags: i32,
    out: &mut RawStat,
    stats: &mut Stats,
) -> i32 {
    let flags = AtFlags::from_bits_retain(flags as _);
    stats.syscalls += 1;
    // SAFETY: `path` is a NUL-terminated string and `out` a `stat` the call fills in; the
    // descriptor is only a number the kernel checks.
    let done = unsafe {
        libc::fstatat(
            std::os::fd::AsRawFd::as_raw_fd(&dir),
            path.as_ptr(),
            out,
            flags.bits() as _,
        )
    };
    match done {
        0 => 0,
        _ => -std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO),
    }
}
