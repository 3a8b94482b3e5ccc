//! The file operations' SQEs, and the ones the kernel lacks: an opcode probed missing at
//! set-up (or masked by `UringOptions::file_opcodes`) runs as a syscall in the loop's thread
//! when pushed, and a `NOP` carries its result through the ring, so that it completes in
//! order with everything else and the callback cannot tell the difference.
#![allow(unsafe_code)]

use sys_uring::opcode;
use sys_uring::squeue::Entry;
use sys_uring::types::{Fd, FsyncFlags};

use super::sqe::{clamp_len, slot_entry, Gather};
use super::IoUringBackend;
use crate::backend::file;
use std::sync::Arc;

use crate::aligned::RegisteredSet;
use crate::filebuf::{Bytes, BytesList};
use crate::operation::Args;
use crate::outbuf::GATHER_MAX;
use crate::stats::Stats;

/// The optional file opcodes, as bits of `FileOpcodes`.
const READV: u16 = 1;
const WRITEV: u16 = 1 << 1;
const FALLOCATE: u16 = 1 << 2;
const FTRUNCATE: u16 = 1 << 3;
const STATX: u16 = 1 << 4;
const RENAMEAT: u16 = 1 << 5;
const UNLINKAT: u16 = 1 << 6;
const MKDIRAT: u16 = 1 << 7;

/// Every optional file opcode.
const ALL: u16 = (1 << 8) - 1;

/// Each optional file opcode and its bit.
const OPTIONAL: [(u8, u16); 8] = [
    (opcode::Readv::CODE, READV),
    (opcode::Writev::CODE, WRITEV),
    (opcode::Fallocate::CODE, FALLOCATE),
    (opcode::Ftruncate::CODE, FTRUNCATE),
    (opcode::Statx::CODE, STATX),
    (opcode::RenameAt::CODE, RENAMEAT),
    (opcode::UnlinkAt::CODE, UNLINKAT),
    (opcode::MkDirAt::CODE, MKDIRAT),
];

/// The optional file opcodes the loop submits to the kernel (the rest run inline).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct FileOpcodes(u16);

impl FileOpcodes {
    /// The opcodes `ring`'s kernel has; none when `enabled` is off (the mask). A kernel that
    /// cannot say (before 5.6) has none but the vectored pair: all run inline there.
    pub(super) fn probe(ring: &sys_uring::Ring, enabled: bool) -> FileOpcodes {
        let opcodes = ring.opcodes().ok();
        let supports = |code| {
            opcodes
                .as_ref()
                .is_some_and(|probe| probe.is_supported(code))
        };
        FileOpcodes::probed(supports, enabled)
    }

    /// The opcodes the kernel `supports`; none when `enabled` is off (the mask).
    fn probed(supports: impl Fn(u8) -> bool, enabled: bool) -> FileOpcodes {
        if !enabled {
            return FileOpcodes(0);
        }
        let bits = OPTIONAL
            .iter()
            .filter(|(code, _)| supports(*code))
            .fold(0, |bits, (_, bit)| bits | bit);
        FileOpcodes(bits)
    }

    /// Whether some optional file opcode runs inline (a kernel that lacks one, or the mask).
    pub(super) fn any_inline(self) -> bool {
        self.0 != ALL
    }

    /// How many of the optional file opcodes the kernel runs (for `UringFeatures`).
    pub(super) fn count(self) -> u32 {
        self.0.count_ones()
    }

    /// Whether `args` needs an opcode the kernel lacks (or is masked).
    pub(super) fn inline(self, args: &Args) -> bool {
        let bit = match args {
            Args::ReadV { .. } => READV,
            Args::WriteV { .. } => WRITEV,
            Args::Fallocate { .. } => FALLOCATE,
            Args::Ftruncate { .. } => FTRUNCATE,
            Args::Statx { .. } => STATX,
            Args::Renameat { .. } => RENAMEAT,
            Args::Unlinkat { .. } => UNLINKAT,
            Args::Mkdirat { .. } => MKDIRAT,
            _ => return false,
        };
        self.0 & bit == 0
    }
}

/// The per-slot word of an operation run inline: no result pending.
pub(super) const NO_INLINE: i32 = i32::MIN;

impl IoUringBackend {
    /// Registers `set` with the kernel, once; where the kernel refuses (the locked-memory
    /// limit, say) the buffers stay plain, and `UringFeatures::registered_buffers` says so.
    pub(crate) fn register_buffers(&mut self, set: &Arc<RegisteredSet>) {
        assert!(self.fixed.is_none(), "buffers registered twice");
        // SAFETY: the backend keeps an `Arc` of the set, so its memory outlives the ring;
        // fixed operations name a buffer's own index with its own range (`file_entry`).
        match unsafe { self.ring.register_buffers(&set.iovecs()) } {
            Ok(()) => self.fixed = Some(Arc::clone(set)),
            Err(error) => eprintln!("dispatch-loop: registered buffers stay plain: {error}"),
        }
    }

    /// The SQE of a file operation; one the kernel lacks runs now, and a `NOP` stands in for
    /// it (its result kept in `inline_results[idx]` for the reap).
    // Kept out of `entry`'s body: the network operations' SQEs are built without its code
    // in the way (inlined, it doubled the SQE copies of every push).
    #[inline(never)]
    pub(super) fn file_entry(&mut self, idx: u32, args: &mut Args) -> Entry {
        if self.file_opcodes.inline(args) {
            let mut stats = Stats::new(crate::stats::BackendKind::IoUring, None);
            let result = file::perform_as_uring(args, &mut stats);
            self.inline_syscalls += stats.syscalls;
            assert_ne!(result, NO_INLINE);
            let slot = &mut self.inline_results[idx as usize];
            assert_eq!(*slot, 0, "slot {idx} ran inline twice");
            // Stored with its top bit flipped, so that "none" is 0 (a zeroed table).
            *slot = result ^ NO_INLINE;
            // The push cannot fail (it checked for room), so the mark goes on now.
            self.marks[idx as usize] = super::MARK_INLINE;
            return opcode::Nop::new().build();
        }
        match args {
            Args::Read { .. } | Args::Write { .. } => self.rw_entry(args),
            Args::ReadV {
                fd,
                bufs,
                offset,
                flags,
            } => {
                let (iov, n) = self.point_iovecs(idx, bufs, true);
                opcode::Readv::new(Fd(*fd), iov, n)
                    .offset(*offset)
                    .rw_flags(*flags)
                    .build()
            }
            Args::WriteV {
                fd,
                bufs,
                offset,
                flags,
            } => {
                let (iov, n) = self.point_iovecs(idx, bufs, false);
                opcode::Writev::new(Fd(*fd), iov, n)
                    .offset(*offset)
                    .rw_flags(*flags)
                    .build()
            }
            Args::Fsync { fd, datasync } => {
                let flags = match datasync {
                    true => FsyncFlags::DATASYNC,
                    false => FsyncFlags::empty(),
                };
                opcode::Fsync::new(Fd(*fd)).flags(flags).build()
            }
            _ => metadata_entry(args),
        }
    }

    /// A read or write: `READ_FIXED`/`WRITE_FIXED` from one of this loop's registered
    /// buffers, else `READ`/`WRITE`.
    fn rw_entry(&self, args: &mut Args) -> Entry {
        match args {
            Args::Read { fd, buf, offset } => {
                let index = self.fixed_index(buf);
                let (ptr, len) = buf.spare_raw();
                let len = clamp_len(len);
                match index {
                    Some(index) => opcode::ReadFixed::new(Fd(*fd), ptr, len, index)
                        .offset(*offset)
                        .build(),
                    None => opcode::Read::new(Fd(*fd), ptr, len).offset(*offset).build(),
                }
            }
            Args::Write { fd, buf, offset } => {
                let index = self.fixed_index(buf);
                let (ptr, len) = buf.filled_raw();
                let len = clamp_len(len);
                match index {
                    Some(index) => opcode::WriteFixed::new(Fd(*fd), ptr, len, index)
                        .offset(*offset)
                        .build(),
                    None => opcode::Write::new(Fd(*fd), ptr, len)
                        .offset(*offset)
                        .build(),
                }
            }
            other => unreachable!("{} is not a read or write", other.label()),
        }
    }

    /// The registered index of `buf`, if it is one of this loop's registered buffers (the
    /// kernel checks the address range against that buffer's; one of another loop's set is
    /// a plain buffer here).
    fn fixed_index(&self, buf: &Bytes) -> Option<u16> {
        match (buf, &self.fixed) {
            (Bytes::Aligned(buf), Some(set)) => buf.index_in(set),
            _ => None,
        }
    }

    /// Points slot `idx`'s iovecs (the vectored send's box, made the first time) at the
    /// first `GATHER_MAX` buffers: their spare capacity for a read, their bytes for a write.
    fn point_iovecs(
        &mut self,
        idx: u32,
        bufs: &mut BytesList,
        read: bool,
    ) -> (*const libc::iovec, u32) {
        let gather = slot_entry(&mut self.gathers, idx, || None).get_or_insert_with(Gather::new);
        let n = bufs.len().min(GATHER_MAX);
        for (i, iov) in gather.iov.iter_mut().enumerate().take(n) {
            let (base, len) = match read {
                true => bufs.spare_raw(i),
                false => {
                    let (ptr, len) = bufs.filled_raw(i);
                    (ptr.cast_mut(), len)
                }
            };
            *iov = libc::iovec {
                iov_base: base.cast(),
                iov_len: len,
            };
        }
        (gather.iov.as_ptr(), n as u32)
    }
}

/// The SQEs of the operations on sizes, space and paths.
fn metadata_entry(args: &mut Args) -> Entry {
    match args {
        Args::Fallocate {
            fd,
            mode,
            offset,
            len,
        } => opcode::Fallocate::new(Fd(*fd), *len)
            .offset(*offset)
            .mode(*mode)
            .build(),
        Args::Ftruncate { fd, len } => opcode::Ftruncate::new(Fd(*fd), *len).build(),
        Args::Statx {
            dir,
            path,
            flags,
            out,
        } => {
            let out: *mut libc::statx = &mut **out;
            let mask = libc::STATX_BASIC_STATS | libc::STATX_DIOALIGN;
            opcode::Statx::new(Fd(*dir), path.as_ptr(), out.cast())
                .flags(*flags)
                .mask(mask)
                .build()
        }
        Args::Openat {
            dir,
            path,
            flags,
            mode,
        } => opcode::OpenAt::new(Fd(*dir), path.as_ptr())
            .flags(*flags | libc::O_CLOEXEC)
            .mode(*mode)
            .build(),
        Args::Renameat {
            old_dir,
            old_path,
            new_dir,
            new_path,
            flags,
        } => opcode::RenameAt::new(
            Fd(*old_dir),
            old_path.as_ptr(),
            Fd(*new_dir),
            new_path.as_ptr(),
        )
        .flags(*flags)
        .build(),
        Args::Unlinkat { dir, path, flags } => opcode::UnlinkAt::new(Fd(*dir), path.as_ptr())
            .flags(*flags)
            .build(),
        Args::Mkdirat { dir, path, mode } => opcode::MkDirAt::new(Fd(*dir), path.as_ptr())
            .mode(*mode)
            .build(),
        other => unreachable!("{} is not a file operation", other.label()),
    }
}
