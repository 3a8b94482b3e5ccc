//! The file operations on the simulated disk, as the loop hands them over (`Args`): reads
//! and writes (plain and vectored, `O_DIRECT` alignment checked, short under the
//! `short_io` fault, `EIO` under `disk_eio`, `ENOSPC` past the disk's capacity), the
//! flushes, `fallocate`, `ftruncate`, `statx`, and the operations on names (`dirs.rs`).
//! What survives a crash is `disk.rs`'s and `dirs.rs`'s to say.

use std::mem::MaybeUninit;
use std::os::fd::{IntoRawFd, RawFd};

use super::disk::{Inode, Kind, BLOCK, SECTOR};
use super::world::{Fault, Obj, World};
use super::{bad, Tried};
use crate::filebuf::BytesList;
use crate::operation::{Args, RawStat};
use crate::outbuf::GATHER_MAX;

/// Linux's `RWF_DSYNC` and `RWF_SYNC`, the `RWF_*` flags the simulator knows (on every
/// system): a write with either is durable when it completes. Any other flag is
/// `EOPNOTSUPP`, as Linux answers for a flag it lacks.
const RWF_DSYNC: i32 = 2;
const RWF_SYNC: i32 = 4;

/// The offset that means "the file position" (see `backend/file.rs`).
const OFFSET_CURRENT: u64 = u64::MAX;

/// The largest file the simulator makes (its bytes live in memory).
const FILE_MAX: u64 = 1 << 40;

/// Whether a direct I/O request is aligned as `O_DIRECT` asks: buffer address, offset and
/// length multiples of the sector.
fn aligned(address: usize, offset: u64, len: usize) -> bool {
    let sector = SECTOR as usize;
    address.is_multiple_of(sector) && offset.is_multiple_of(SECTOR) && len.is_multiple_of(sector)
}

impl World {
    fn eio(&mut self) -> bool {
        let fired = self.rng.chance(self.faults.disk_eio);
        if fired {
            self.fault(Fault::DiskEio);
        }
        fired
    }

    /// A short transfer under the `short_io` fault: fewer bytes than `n` (at least one, or
    /// whole sectors for direct I/O).
    fn short(&mut self, n: usize, direct: bool) -> usize {
        let unit = if direct { SECTOR as usize } else { 1 };
        if n / unit < 2 || !self.rng.chance(self.faults.short_io) {
            return n;
        }
        self.fault(Fault::ShortIo);
        self.rng.between(1, (n / unit - 1) as u64) as usize * unit
    }

    /// The checks every read and write makes: the description is open for reading or
    /// `writing` (else `EBADF`), a file (`EISDIR`), aligned for direct I/O (`EINVAL`); then
    /// the `EIO` fault. The offset to use (the file position for `OFFSET_CURRENT`, the end
    /// for a write with `O_APPEND`).
    fn data_checks(
        &mut self,
        file: u32,
        writing: bool,
        at: (usize, u64, usize),
    ) -> Result<u64, i32> {
        let open = &self.disk.files[file as usize];
        let allowed = if writing {
            open.writable
        } else {
            open.readable
        };
        if !open.open || !allowed {
            return Err(-libc::EBADF);
        }
        if self.disk.inode(file).kind == Kind::Dir {
            return Err(-libc::EISDIR);
        }
        let (address, offset, len) = at;
        let offset = match offset {
            // `O_APPEND`: every write goes to the end, whatever the offset (as Linux does,
            // `pwrite` included).
            _ if writing && open.append => self.disk.inode(file).data.len() as u64,
            OFFSET_CURRENT => open.position,
            offset => offset,
        };
        if open.direct && !aligned(address, offset, len) {
            return Err(-libc::EINVAL);
        }
        if self.eio() {
            return Err(-libc::EIO);
        }
        Ok(offset)
    }

    /// `pread`: copies up to `len` bytes at `offset` into `sink` (`address`: where they
    /// land, for the direct I/O check); the count or `-errno`.
    pub(crate) fn read_file(
        &mut self,
        file: u32,
        (address, offset, len): (usize, u64, usize),
        sink: &mut dyn FnMut(&[u8]),
    ) -> i32 {
        let at_position = offset == OFFSET_CURRENT;
        let offset = match self.data_checks(file, false, (address, offset, len)) {
            Ok(offset) => offset,
            Err(errno) => return errno,
        };
        let size = self.disk.inode(file).data.len();
        let start = usize::try_from(offset).unwrap_or(usize::MAX).min(size);
        let n = (size - start).min(len).min(i32::MAX as usize);
        let n = self.short(n, self.disk.files[file as usize].direct);
        sink(&self.disk.inode(file).data[start..start + n]);
        if at_position {
            self.disk.files[file as usize].position = (start + n) as u64;
        }
        n as i32
    }

    /// `pwrite` (durable at once with `dsync`, or on a file opened `O_DSYNC`): the count
    /// written (short under the fault, or for want of space) or `-errno`.
    pub(crate) fn write_file(
        &mut self,
        file: u32,
        at: (usize, u64),
        bytes: &[u8],
        dsync: bool,
    ) -> i32 {
        let at_position = at.1 == OFFSET_CURRENT;
        let offset = match self.data_checks(file, true, (at.0, at.1, bytes.len())) {
            Ok(offset) => offset,
            Err(errno) => return errno,
        };
        let direct = self.disk.files[file as usize].direct;
        let mut n = self.short(bytes.len().min(i32::MAX as usize), direct);
        if offset.saturating_add(n as u64) > FILE_MAX {
            return -libc::EFBIG;
        }
        let room = self.disk.room_end(file);
        if offset + n as u64 > room {
            let fits = room.saturating_sub(offset) as usize;
            n = if direct {
                fits / SECTOR as usize * SECTOR as usize
            } else {
                fits
            };
            if n == 0 {
                self.stats.disk_full += 1;
                return -libc::ENOSPC;
            }
        }
        let dsync = dsync || self.disk.files[file as usize].dsync;
        self.disk.inode_mut(file).write(offset, &bytes[..n], dsync);
        // `pwrite` leaves the position alone; a write at the position moves it.
        if at_position {
            self.disk.files[file as usize].position = offset + n as u64;
        }
        n as i32
    }

    /// `fsync` or `fdatasync` (`datasync`; see `disk.rs` for the difference): `0` or
    /// `-errno`. On a directory, makes its changes of names durable. A failed flush (`EIO`)
    /// settles the file's unsynced changes as a crash would, and forgets them.
    pub(crate) fn sync_file(&mut self, file: u32, datasync: bool) -> i32 {
        if !self.disk.files[file as usize].open {
            return -libc::EBADF;
        }
        let inode = self.disk.files[file as usize].inode;
        if self.disk.inodes[inode as usize].kind == Kind::Dir {
            self.disk.sync_dir(inode);
            return 0;
        }
        if self.eio() {
            let torn_ppm = self.faults.torn_write;
            let torn = self.disk.inodes[inode as usize].sync_failed(&mut self.rng, torn_ppm);
            for _ in 0..torn {
                self.fault(Fault::TornWrite);
            }
            return -libc::EIO;
        }
        self.disk.inodes[inode as usize].sync(datasync);
        0
    }

    /// `fallocate` with `mode` 0 (grow to `offset + len` and reserve) or
    /// `FALLOC_FL_KEEP_SIZE` (reserve only); other modes are `EOPNOTSUPP`.
    pub(crate) fn allocate(&mut self, file: u32, mode: i32, offset: u64, len: u64) -> i32 {
        const KEEP_SIZE: i32 = 1;
        let open = &self.disk.files[file as usize];
        if !open.open || !open.writable {
            return -libc::EBADF;
        }
        if self.disk.inode(file).kind == Kind::Dir {
            return -libc::EISDIR;
        }
        if mode & !KEEP_SIZE != 0 {
            return -libc::EOPNOTSUPP;
        }
        if len == 0 {
            return -libc::EINVAL;
        }
        let end = match offset.checked_add(len) {
            Some(end) if end <= FILE_MAX => end,
            _ => return -libc::EFBIG,
        };
        if end.next_multiple_of(BLOCK) > self.disk.room_end(file) {
            self.stats.disk_full += 1;
            return -libc::ENOSPC;
        }
        let inode = self.disk.inode_mut(file);
        inode.reserve(end);
        if mode & KEEP_SIZE == 0 && end > inode.data.len() as u64 {
            inode.resize(end);
        }
        0
    }

    /// `ftruncate`: `0` or `-errno` (`EINVAL` on a description not open for writing, as
    /// Linux answers). Growing never fails for want of space (the file is sparse on a real
    /// disk), but the simulator counts the new size as used.
    pub(crate) fn truncate(&mut self, file: u32, len: u64) -> i32 {
        let open = &self.disk.files[file as usize];
        if !open.open {
            return -libc::EBADF;
        }
        if !open.writable || self.disk.inode(file).kind == Kind::Dir {
            return -libc::EINVAL;
        }
        if len > FILE_MAX {
            return -libc::EFBIG;
        }
        self.disk.inode_mut(file).resize(len);
        0
    }
}

/// The simulated file `fd` names, or the error for another object.
fn file_of(world: &World, fd: RawFd) -> Result<u32, i32> {
    match world.obj(fd) {
        Some(Obj::File(file)) => Ok(file),
        _ => Err(bad(world, fd)),
    }
}

/// File operations: every operation of `backend::file::is_file`.
pub(super) fn file_op(world: &mut World, args: &mut Args) -> Tried {
    let result = match args {
        Args::Openat {
            dir,
            path,
            flags,
            mode,
        } => openat(world, *dir, path.as_bytes(), *flags, *mode),
        Args::Statx {
            dir,
            path,
            flags,
            out,
        } => match world.stat_inode(*dir, path.as_bytes(), *flags) {
            Ok(inode) => {
                fill_stat(out, &world.disk.inodes[inode as usize], inode);
                0
            }
            Err(errno) => errno,
        },
        Args::Renameat {
            old_dir,
            old_path,
            new_dir,
            new_path,
            flags,
        } => world.rename(
            (*old_dir, old_path.as_bytes()),
            (*new_dir, new_path.as_bytes()),
            *flags,
        ),
        Args::Unlinkat { dir, path, flags } => world.unlink(*dir, path.as_bytes(), *flags),
        Args::Mkdirat { dir, path, mode } => world.make_dir(*dir, path.as_bytes(), *mode),
        _ => data_op(world, args).unwrap_or_else(|errno| errno),
    };
    Some((result, 0))
}

fn openat(world: &mut World, dir: RawFd, path: &[u8], flags: i32, mode: u32) -> i32 {
    match world.open_file(dir, path, flags, mode) {
        Ok(file) => match world.new_fd(Obj::File(file)) {
            Ok(fd) => fd.into_raw_fd(),
            Err(errno) => {
                world.disk.close(file);
                -errno
            }
        },
        Err(errno) => errno,
    }
}

/// The operations on an open file.
fn data_op(world: &mut World, args: &mut Args) -> Result<i32, i32> {
    Ok(match args {
        Args::Read { fd, buf, offset } => {
            let file = file_of(world, *fd)?;
            read_into(world, file, *offset, &mut [buf.spare()])
        }
        Args::Write { fd, buf, offset } => {
            let file = file_of(world, *fd)?;
            let bytes = buf.filled();
            world.write_file(file, (bytes.as_ptr() as usize, *offset), bytes, false)
        }
        Args::ReadV {
            fd,
            bufs,
            offset,
            flags,
        } => {
            let file = file_of(world, *fd)?;
            rwf_check(*flags)?;
            read_into(world, file, *offset, &mut spares(bufs))
        }
        Args::WriteV {
            fd,
            bufs,
            offset,
            flags,
        } => {
            let file = file_of(world, *fd)?;
            let dsync = rwf_check(*flags)?;
            write_vectored(world, file, bufs, *offset, dsync)
        }
        Args::Fsync { fd, datasync } => world.sync_file(file_of(world, *fd)?, *datasync),
        Args::Fallocate {
            fd,
            mode,
            offset,
            len,
        } => world.allocate(file_of(world, *fd)?, *mode, *offset, *len),
        Args::Ftruncate { fd, len } => world.truncate(file_of(world, *fd)?, *len),
        other => unreachable!("{} is not an operation the simulator tries", other.label()),
    })
}

/// Checks `RWF_*` flags: whether the write is durable at once, or `EOPNOTSUPP`.
fn rwf_check(flags: i32) -> Result<bool, i32> {
    if flags & !(RWF_DSYNC | RWF_SYNC) != 0 {
        return Err(-libc::EOPNOTSUPP);
    }
    Ok(flags != 0)
}

/// The spare capacities of the first `GATHER_MAX` buffers.
fn spares(bufs: &mut BytesList) -> Vec<&mut [MaybeUninit<u8>]> {
    match bufs {
        BytesList::Vec(bufs) => bufs
            .iter_mut()
            .take(GATHER_MAX)
            .map(Vec::spare_capacity_mut)
            .collect(),
        BytesList::Aligned(bufs) => bufs
            .iter_mut()
            .take(GATHER_MAX)
            .map(crate::AlignedBuf::spare_capacity_mut)
            .collect(),
    }
}

/// The bytes of the first `GATHER_MAX` buffers.
fn filled(bufs: &BytesList) -> Vec<&[u8]> {
    match bufs {
        BytesList::Vec(bufs) => bufs.iter().take(GATHER_MAX).map(|b| &b[..]).collect(),
        BytesList::Aligned(bufs) => bufs.iter().take(GATHER_MAX).map(|b| &b[..]).collect(),
    }
}

/// A read into `spares` in order (one `preadv`): each must be aligned for direct I/O.
fn read_into(
    world: &mut World,
    file: u32,
    offset: u64,
    spares: &mut [&mut [MaybeUninit<u8>]],
) -> i32 {
    let misaligned = spares
        .iter()
        .find(|s| !aligned(s.as_ptr() as usize, 0, s.len()));
    let address = misaligned.map_or(0, |_| 1);
    let len = spares.iter().map(|s| s.len()).sum::<usize>();
    let (mut at, mut within) = (0, 0);
    world.read_file(file, (address, offset, len), &mut |mut bytes| {
        while !bytes.is_empty() {
            let spare = &mut spares[at][within..];
            let take = spare.len().min(bytes.len());
            for (slot, &byte) in spare.iter_mut().zip(&bytes[..take]) {
                slot.write(byte);
            }
            bytes = &bytes[take..];
            within += take;
            if within == spares[at].len() {
                (at, within) = (at + 1, 0);
            }
        }
    })
}

/// A vectored write: the buffers' bytes as one write (torn as one at a crash).
fn write_vectored(world: &mut World, file: u32, bufs: &BytesList, offset: u64, dsync: bool) -> i32 {
    let parts = filled(bufs);
    let misaligned = parts
        .iter()
        .any(|p| !aligned(p.as_ptr() as usize, 0, p.len()));
    let bytes = parts.concat();
    world.write_file(file, (usize::from(misaligned), offset), &bytes, dsync)
}

/// What `statx` reports of `inode`: size, type and permissions, links, blocks, and the
/// direct I/O alignment (the sector, for buffers and offsets alike).
#[cfg(target_os = "linux")]
fn fill_stat(out: &mut RawStat, inode: &Inode, ino: u32) {
    out.stx_mask = libc::STATX_BASIC_STATS | libc::STATX_DIOALIGN;
    out.stx_size = inode.data.len() as u64;
    let kind = match inode.kind {
        Kind::File => libc::S_IFREG,
        Kind::Dir => libc::S_IFDIR,
    };
    out.stx_mode = u16::try_from(kind | inode.mode).expect("a mode fits 16 bits");
    out.stx_ino = u64::from(ino) + 1;
    out.stx_nlink = if inode.kind == Kind::Dir {
        2
    } else {
        inode.links
    };
    out.stx_blocks = inode.allocated() / 512;
    out.stx_blksize = BLOCK as u32;
    out.stx_dio_mem_align = SECTOR as u32;
    out.stx_dio_offset_align = SECTOR as u32;
}

/// What `fstatat` reports of `inode` off Linux (no direct I/O alignment there).
#[cfg(not(target_os = "linux"))]
#[allow(
    clippy::unnecessary_cast,
    reason = "the field types differ between systems"
)]
fn fill_stat(out: &mut RawStat, inode: &Inode, ino: u32) {
    out.st_size = inode.data.len() as _;
    let kind = match inode.kind {
        Kind::File => libc::S_IFREG,
        Kind::Dir => libc::S_IFDIR,
    };
    out.st_mode = (kind as u32 | inode.mode) as _;
    out.st_ino = (u64::from(ino) + 1) as _;
    out.st_nlink = (if inode.kind == Kind::Dir {
        2
    } else {
        inode.links
    }) as _;
    out.st_blocks = (inode.allocated() / 512) as _;
    out.st_blksize = BLOCK as _;
}
