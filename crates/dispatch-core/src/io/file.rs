//! The file operations of `Io`: reads and writes at an offset (plain and vectored, into
//! `Vec<u8>` or [`AlignedBuf`](crate::AlignedBuf) for direct I/O), the flushes, and the
//! metadata steps a storage engine takes (preallocate, truncate, stat, open, rename, unlink,
//! make a directory).
//!
//! On io_uring each is one SQE of its own opcode where the kernel has it; the ones a kernel
//! lacks (probed at `Io::new`, or masked by `UringOptions::file_opcodes`) run as a syscall
//! in the loop's thread, their result reported through the ring like any other, so the
//! callback cannot tell. On epoll and kqueue they run as syscalls, in the loop's thread
//! (inline) or on the loop's file workers (`Options::file_workers`); see "Files" on [`Io`].

use std::ffi::CString;
use std::os::fd::RawFd;

use super::{
    Callback, FdCallback, FileCallback, FileVectoredCallback, Io, IoBuf, StatCallback, UnitCallback,
};
use crate::operation::{raw_stat, Args, OpId, ScheduleError, ScheduleErrorKind, Tag};
use crate::slots::Budget;

impl<C> Io<C> {
    /// Reads into `buf`'s spare capacity (`buf[len..capacity]`) from file offset `offset`;
    /// the callback gets the byte count (0 at end of file) and `buf` with its length extended
    /// by it. `offset` `u64::MAX` reads at the file's current position and advances it, on
    /// every backend. `buf` is a `Vec<u8>` or an [`AlignedBuf`](crate::AlignedBuf)
    /// ([`IoBuf`]), and comes back as it went in.
    ///
    /// # Direct I/O
    /// On a file opened with `O_DIRECT` the kernel moves the bytes between the device and
    /// `buf` without the page cache, and asks that the spare capacity's address, `offset`
    /// and the length all be multiples of the device's block size ([`Io::statx`] reports
    /// what the file system asks: [`crate::FileStat::dio_mem_align`] and
    /// `dio_offset_align`). Use an [`AlignedBuf`](crate::AlignedBuf) of a block-multiple
    /// capacity, cleared before each read. A misaligned request is not fixed up: the loop
    /// passes it to the kernel as it is, on every backend, and the kernel's answer comes to
    /// the callback, because quietly bouncing through an aligned copy would hide the cost the
    /// program chose direct I/O to avoid. What the kernel answers is the file system's
    /// choice: a misaligned write's offset or length is `EINVAL`, while ext4 (Linux 6.18)
    /// serves some misaligned direct reads, and small misaligned writes, through the page
    /// cache instead.
    ///
    /// ```
    /// use std::io::Write;
    /// use std::os::fd::AsRawFd;
    /// use dispatch_loop::{AlignedBuf, Io, Options};
    ///
    /// let path = std::env::temp_dir().join(format!("dispatch-doc-read-{}", std::process::id()));
    /// std::fs::File::create(&path).unwrap().write_all(&[7; 4096]).unwrap();
    /// let file = std::fs::File::open(&path).unwrap();
    ///
    /// let mut io: Io<Option<AlignedBuf>> = Io::new(&Options::new(4)).expect("a backend");
    /// let buf = AlignedBuf::new(4096, 4096).unwrap();
    /// io.read(0, file.as_raw_fd(), buf, 0, |got, _io, _tag, (n, buf)| {
    ///     assert_eq!(n.expect("read"), 4096);
    ///     *got = Some(buf);
    /// })
    /// .expect("a free slot");
    /// let mut got = None;
    /// io.run_until_idle(&mut got).unwrap();
    /// assert_eq!(&got.unwrap()[..], &[7; 4096][..]);
    /// std::fs::remove_file(&path).unwrap();
    /// ```
    ///
    /// # Backends
    /// Offsets belong to seekable files. On a pipe io_uring ignores any other `offset` and
    /// reads, while epoll and kqueue fail with `ESPIPE`; at `u64::MAX` every backend reads
    /// the pipe. Use [`Io::recv`] for sockets. On epoll and kqueue the read is one `read`
    /// syscall: inline, on an empty blocking pipe it blocks the whole loop until data
    /// arrives; with file workers ([`crate::Options::file_workers`]) it blocks one worker
    /// (and the `Io`'s drop, for up to 10 s); on an empty non-blocking pipe it fails with
    /// `EAGAIN` either way. io_uring waits for the data without blocking the loop, on a
    /// blocking and a non-blocking (`O_NONBLOCK`) pipe alike.
    ///
    /// # Errors
    /// When every slot is in flight, or `buf` has no spare capacity; the error returns `buf`.
    pub fn read<B: IoBuf>(
        &mut self,
        tag: Tag,
        fd: RawFd,
        buf: B,
        offset: u64,
        callback: FileCallback<C, B>,
    ) -> Result<OpId, ScheduleError<B>> {
        let mut buf = buf.into_bytes();
        if buf.spare().is_empty() {
            return Err(ScheduleError {
                kind: ScheduleErrorKind::NoSpareCapacity,
                value: B::from_bytes(buf),
            });
        }
        let Some(idx) = self.slots.alloc(Budget::Op) else {
            return Err(self.exhausted(B::from_bytes(buf)));
        };
        let args = Args::Read { fd, buf, offset };
        Ok(self.start(idx, tag, args, B::callback(callback)))
    }

    /// Writes `buf[..]` at file offset `offset`; the callback gets the byte count written
    /// (possibly short) and `buf`. `offset` `u64::MAX` writes at the file's current position
    /// and advances it, on every backend. `buf` is a `Vec<u8>` or an
    /// [`AlignedBuf`](crate::AlignedBuf); for `O_DIRECT` see "Direct I/O" on [`Io::read`].
    /// As with [`Io::read`], offsets belong to seekable files: on a pipe io_uring ignores any
    /// other `offset` while epoll and kqueue fail with `ESPIPE`; at `u64::MAX` every backend
    /// writes. On epoll and kqueue a write to a full blocking pipe blocks until there is
    /// room: the whole loop when file operations run inline, one worker with
    /// [`crate::Options::file_workers`].
    ///
    /// # Errors
    /// When every slot is in flight; the error returns `buf`.
    pub fn write<B: IoBuf>(
        &mut self,
        tag: Tag,
        fd: RawFd,
        buf: B,
        offset: u64,
        callback: FileCallback<C, B>,
    ) -> Result<OpId, ScheduleError<B>> {
        let args = |buf: B| Args::Write {
            fd,
            buf: buf.into_bytes(),
            offset,
        };
        self.schedule_owned(tag, buf, args, B::callback(callback))
    }

    /// Reads at `offset` into the spare capacities of `bufs`, in order (one `preadv2`:
    /// the first buffer is filled to its capacity before the next gets a byte), with
    /// `RWF_*` `flags` (`libc::RWF_HIPRI`, `RWF_NOWAIT`, ...; 0 for none). The callback gets
    /// the byte count and `bufs`, each buffer's length extended by what landed in it. At
    /// most [`crate::GATHER_MAX`] buffers take part (the rest come back untouched); buffers
    /// without spare capacity take nothing. `offset` `u64::MAX` reads at the file position.
    ///
    /// `flags` are Linux's (`preadv2(2)`): io_uring and epoll pass them to the kernel,
    /// which answers `EOPNOTSUPP` (or `EINVAL`) for one it lacks; FreeBSD and macOS have no
    /// such flags, so any but 0 fails there with `EOPNOTSUPP` (the kqueue backend over the
    /// kevent double, on Linux, passes them to Linux); the simulator accepts `RWF_DSYNC` and
    /// `RWF_SYNC` (see `sim`) and 0.
    ///
    /// Offsets belong to seekable files, as for [`Io::read`]: on a pipe or socket io_uring
    /// ignores an offset other than `u64::MAX` (also where the loop performs the operation
    /// itself, `UringOptions::file_opcodes`), while epoll and kqueue fail with `ESPIPE`.
    ///
    /// # Errors
    /// When every slot is in flight; the error returns `bufs`.
    pub fn read_vectored<B: IoBuf>(
        &mut self,
        tag: Tag,
        fd: RawFd,
        bufs: Vec<B>,
        offset: u64,
        flags: i32,
        callback: FileVectoredCallback<C, B>,
    ) -> Result<OpId, ScheduleError<Vec<B>>> {
        let args = |bufs| Args::ReadV {
            fd,
            bufs: B::into_list(bufs),
            offset,
            flags,
        };
        self.schedule_owned(tag, bufs, args, B::list_callback(callback))
    }

    /// Writes the bytes of `bufs`, in order, at `offset` as one `pwritev2` with `RWF_*`
    /// `flags`: a log appends a header and a record without copying them together, and
    /// `libc::RWF_DSYNC` makes the write durable by itself (as if followed by
    /// [`Io::fdatasync`], in one operation). The callback gets the byte count (possibly
    /// short) and `bufs` unchanged. At most [`crate::GATHER_MAX`] buffers take part.
    /// `offset` `u64::MAX` writes at the file position. For `flags` on each backend see
    /// [`Io::read_vectored`].
    ///
    /// # Errors
    /// When every slot is in flight; the error returns `bufs`.
    pub fn write_vectored<B: IoBuf>(
        &mut self,
        tag: Tag,
        fd: RawFd,
        bufs: Vec<B>,
        offset: u64,
        flags: i32,
        callback: FileVectoredCallback<C, B>,
    ) -> Result<OpId, ScheduleError<Vec<B>>> {
        let args = |bufs| Args::WriteV {
            fd,
            bufs: B::into_list(bufs),
            offset,
            flags,
        };
        self.schedule_owned(tag, bufs, args, B::list_callback(callback))
    }

    /// Flushes `fd`'s data and metadata to stable storage (`fsync`): once the callback has
    /// `Ok`, what was written before survives a crash, and so does the file's size.
    ///
    /// # Errors
    /// When every slot is in flight.
    pub fn fsync(
        &mut self,
        tag: Tag,
        fd: RawFd,
        callback: UnitCallback<C>,
    ) -> Result<OpId, ScheduleError<()>> {
        let args = Args::Fsync {
            fd,
            datasync: false,
        };
        self.schedule(tag, move || args, Callback::Unit(callback), ())
    }

    /// Flushes `fd`'s data to stable storage, and of its metadata only what reading the
    /// data back needs (its size, not its times): `fdatasync(2)`, the flush a log takes
    /// after each append (cheaper than [`Io::fsync`] when the size did not change, as in a
    /// preallocated log). On macOS, which has no `fdatasync`, it is `fsync`, which there
    /// reaches the drive's cache only (as fsync does on macOS).
    ///
    /// # Errors
    /// When every slot is in flight.
    pub fn fdatasync(
        &mut self,
        tag: Tag,
        fd: RawFd,
        callback: UnitCallback<C>,
    ) -> Result<OpId, ScheduleError<()>> {
        let args = Args::Fsync { fd, datasync: true };
        self.schedule(tag, move || args, Callback::Unit(callback), ())
    }

    /// Allocates (`mode` 0) or otherwise manipulates the space of `fd` from `offset` for
    /// `len` bytes (`fallocate(2)`; Linux `mode` flags such as `libc::FALLOC_FL_KEEP_SIZE`,
    /// `FALLOC_FL_PUNCH_HOLE`). With mode 0 the file grows to `offset + len` if shorter and
    /// later writes there cannot fail for want of space. On FreeBSD it is
    /// `posix_fallocate` and on macOS `F_PREALLOCATE` plus a truncate to the new size; there
    /// any `mode` but 0 is `EOPNOTSUPP` (the kqueue backend over the kevent double, on Linux,
    /// passes modes to Linux). A file system that cannot preallocate answers `EOPNOTSUPP`.
    ///
    /// # Errors
    /// When every slot is in flight.
    pub fn fallocate(
        &mut self,
        tag: Tag,
        fd: RawFd,
        mode: i32,
        offset: u64,
        len: u64,
        callback: UnitCallback<C>,
    ) -> Result<OpId, ScheduleError<()>> {
        let args = Args::Fallocate {
            fd,
            mode,
            offset,
            len,
        };
        self.schedule(tag, move || args, Callback::Unit(callback), ())
    }

    /// Sets `fd`'s size to `len` bytes (`ftruncate(2)`): cut, or extended with zeros.
    /// io_uring has its own opcode from Linux 6.9; before that the loop truncates in its
    /// own thread.
    ///
    /// # Errors
    /// When every slot is in flight.
    pub fn ftruncate(
        &mut self,
        tag: Tag,
        fd: RawFd,
        len: u64,
        callback: UnitCallback<C>,
    ) -> Result<OpId, ScheduleError<()>> {
        let args = Args::Ftruncate { fd, len };
        self.schedule(tag, move || args, Callback::Unit(callback), ())
    }

    /// Finds out about `path` relative to `dir` (`statx(2)`; `fstatat(2)` off Linux): its
    /// size, type and permissions, allocated blocks, and the alignment direct I/O needs
    /// ([`crate::FileStat`]). `flags` are `libc::AT_SYMLINK_NOFOLLOW` and
    /// `libc::AT_EMPTY_PATH`; with `AT_EMPTY_PATH` and an empty `path`, it describes the
    /// open descriptor `dir` itself (Linux; elsewhere use the path). Each statx allocates
    /// the kernel's answer (one box, freed before the callback runs).
    ///
    /// ```
    /// use std::ffi::CString;
    /// use dispatch_loop::{FileStat, Io, Options, AT_FDCWD};
    ///
    /// let mut io: Io<Option<FileStat>> = Io::new(&Options::new(4)).expect("a backend");
    /// let path = CString::new("/").unwrap();
    /// io.statx(0, AT_FDCWD, path, 0, |found, _io, _tag, stat| {
    ///     *found = Some(stat.expect("statx /"));
    /// })
    /// .expect("a free slot");
    /// let mut found = None;
    /// io.run_until_idle(&mut found).unwrap();
    /// assert!(found.unwrap().is_dir());
    /// ```
    ///
    /// # Errors
    /// When every slot is in flight; the error returns `path`.
    pub fn statx(
        &mut self,
        tag: Tag,
        dir: RawFd,
        path: CString,
        flags: i32,
        callback: StatCallback<C>,
    ) -> Result<OpId, ScheduleError<CString>> {
        let args = |path| Args::Statx {
            dir,
            path,
            flags,
            out: raw_stat(),
        };
        self.schedule_owned(tag, path, args, Callback::Stat(callback))
    }

    /// Opens `path` relative to the directory `dir` ([`crate::AT_FDCWD`] for the working
    /// directory; ignored, as by `openat(2)`, when `path` is absolute) with `open(2)`
    /// `flags` (`libc::O_RDONLY`, `O_WRONLY`, `O_RDWR`, `O_CREAT`, `O_TRUNC`, `O_APPEND`,
    /// ... from the `libc` crate) and `mode` (permissions for `O_CREAT`, such as `0o644`);
    /// `O_CLOEXEC` is always added. The new descriptor is owned by the callback's
    /// `OwnedFd`.
    ///
    /// On epoll and kqueue the open is one `openat` syscall: opening a FIFO that has no peer
    /// (or a file on a slow network file system) blocks until the peer opens it, the whole
    /// loop when file operations run inline, one worker with
    /// [`crate::Options::file_workers`].
    /// io_uring never blocks the loop, but it first tries the open without blocking, so for
    /// a FIFO without a peer `O_RDONLY` opens at once, `O_WRONLY` fails at once with
    /// `ENXIO`, and with `O_CREAT` or `O_TRUNC` the open waits in a kernel worker until the
    /// peer opens it (and can be cancelled). Open FIFOs with `O_NONBLOCK` to get the same
    /// answer on every backend.
    ///
    /// ```
    /// use std::ffi::CString;
    /// use std::os::fd::OwnedFd;
    /// use dispatch_loop::{Io, Options, AT_FDCWD};
    ///
    /// let mut io: Io<Option<OwnedFd>> = Io::new(&Options::new(4)).expect("a backend");
    /// let path = CString::new("/dev/null").unwrap();
    /// io.openat(0, AT_FDCWD, path, libc::O_RDONLY, 0, |opened, _io, _tag, result| {
    ///     *opened = Some(result.expect("open /dev/null"));
    /// })
    /// .expect("a free slot");
    /// let mut opened = None;
    /// io.run_until_idle(&mut opened).expect("run");
    /// assert!(opened.is_some());
    /// ```
    ///
    /// # Errors
    /// When every slot is in flight; the error returns `path`.
    pub fn openat(
        &mut self,
        tag: Tag,
        dir: RawFd,
        path: CString,
        flags: i32,
        mode: u32,
        callback: FdCallback<C>,
    ) -> Result<OpId, ScheduleError<CString>> {
        let args = |path| Args::Openat {
            dir,
            path,
            flags,
            mode,
        };
        self.schedule_owned(tag, path, args, Callback::Fd(callback))
    }

    /// Renames `old_path` (relative to `old_dir`) to `new_path` (relative to `new_dir`),
    /// replacing what is there (`renameat2(2)`), or with `flags`
    /// [`crate::RENAME_NOREPLACE`] failing with `EEXIST` instead. A rename survives a crash
    /// only once the directories involved are flushed: [`Io::fsync`] a descriptor of each
    /// (opened `O_RDONLY | O_DIRECTORY`). `RENAME_NOREPLACE` works on Linux and macOS
    /// (`renameatx_np`'s `RENAME_EXCL`); FreeBSD answers `EOPNOTSUPP` for it.
    ///
    /// # Errors
    /// When every slot is in flight; the error returns both paths.
    // The arguments of renameat2(2), in its order.
    #[allow(clippy::too_many_arguments)]
    pub fn renameat(
        &mut self,
        tag: Tag,
        old_dir: RawFd,
        old_path: CString,
        new_dir: RawFd,
        new_path: CString,
        flags: u32,
        callback: UnitCallback<C>,
    ) -> Result<OpId, ScheduleError<(CString, CString)>> {
        let args = |(old_path, new_path)| Args::Renameat {
            old_dir,
            old_path,
            new_dir,
            new_path,
            flags,
        };
        let paths = (old_path, new_path);
        self.schedule_owned(tag, paths, args, Callback::Unit(callback))
    }

    /// Removes the name `path` relative to `dir` (`unlinkat(2)`): a file, or with `flags`
    /// `libc::AT_REMOVEDIR` an empty directory. As for a rename, the removal survives a
    /// crash only once the directory is flushed ([`Io::fsync`] on it).
    ///
    /// # Errors
    /// When every slot is in flight; the error returns `path`.
    pub fn unlinkat(
        &mut self,
        tag: Tag,
        dir: RawFd,
        path: CString,
        flags: i32,
        callback: UnitCallback<C>,
    ) -> Result<OpId, ScheduleError<CString>> {
        let args = |path| Args::Unlinkat { dir, path, flags };
        self.schedule_owned(tag, path, args, Callback::Unit(callback))
    }

    /// Makes the directory `path` relative to `dir` with permissions `mode` (`mkdirat(2)`,
    /// less the umask); it survives a crash once its parent is flushed.
    ///
    /// # Errors
    /// When every slot is in flight; the error returns `path`.
    pub fn mkdirat(
        &mut self,
        tag: Tag,
        dir: RawFd,
        path: CString,
        mode: u32,
        callback: UnitCallback<C>,
    ) -> Result<OpId, ScheduleError<CString>> {
        let args = |path| Args::Mkdirat { dir, path, mode };
        self.schedule_owned(tag, path, args, Callback::Unit(callback))
    }
}
