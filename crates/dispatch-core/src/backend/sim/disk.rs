//! The simulated disk: inodes (files and directories), open file descriptions, and what a
//! crash keeps. The crash semantics (also in `dispatch_loop::sim`'s docs):
//!
//! - A file has the bytes a reader sees now (`data`, the page cache) and the bytes a crash
//!   starts from (`durable`); every change since the last flush (a write, a resize by
//!   `ftruncate` or `O_TRUNC`, a reservation by `fallocate`) waits in `unsynced`, in order.
//!   `fsync` applies them all to `durable`; `fdatasync` all but what reading the data back
//!   does not need, as on Linux: it keeps the data and the size, and leaves space reserved
//!   past the end of the file (`FALLOC_FL_KEEP_SIZE`) for an `fsync` (the simulator models
//!   no timestamps, the other metadata `fdatasync` skips). A crash applies each unsynced
//!   change or not at random, and tears a write now and then (`Faults::torn_write`, see
//!   [`torn_ranges`]).
//! - A failed `fsync` (`EIO`) settles the unsynced changes as a crash would (each kept,
//!   lost or torn) and forgets them, as Linux marks the pages clean after a writeback error:
//!   a later `fsync` succeeds without writing them again, and readers still see them until
//!   the next crash.
//! - Directory entries have a volatile and a durable version too (`dirs.rs`): a create,
//!   rename, unlink or mkdir is durable only once a directory it touches is fsynced.
//! - Space is counted in 4 KiB blocks against `SimOptions::disk_capacity_bytes`: a write
//!   that needs blocks beyond it is short, or fails with `ENOSPC`; blocks `fallocate`
//!   reserved never fail.

use std::collections::BTreeMap;

use super::rng::Rng;

/// The sector: the unit a torn write keeps or loses whole (in two of its three shapes) and
/// the alignment `O_DIRECT` asks for.
pub(crate) const SECTOR: u64 = 512;
/// The allocation unit of the capacity count.
pub(crate) const BLOCK: u64 = 4096;

/// What an inode is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    File,
    Dir,
}

/// A change to a file not flushed yet.
#[derive(Debug)]
enum Change {
    Write {
        offset: u64,
        bytes: Vec<u8>,
    },
    /// `ftruncate` (or `O_TRUNC`, or the growth of a `fallocate`).
    Resize {
        len: u64,
    },
    /// Space reserved by `fallocate` up to `end`.
    Reserve {
        end: u64,
    },
}

/// One file or directory.
#[derive(Debug)]
pub(crate) struct Inode {
    pub(crate) kind: Kind,
    /// Permission bits (the type comes from `kind`).
    pub(crate) mode: u32,
    pub(crate) data: Vec<u8>,
    durable: Vec<u8>,
    unsynced: Vec<Change>,
    /// Bytes from the start reserved by `fallocate` (now, and what a crash keeps).
    pub(crate) reserved: u64,
    durable_reserved: u64,
    /// Names this inode has now (in volatile entries).
    pub(crate) links: u32,
    /// Open file descriptions of it.
    pub(crate) opened: u32,
    /// A directory's entries now, and what a crash starts from.
    pub(crate) entries: BTreeMap<Vec<u8>, u32>,
    pub(crate) durable_entries: BTreeMap<Vec<u8>, u32>,
    /// A directory's parent (the root's is itself), for `..`.
    pub(crate) parent: u32,
}

impl Inode {
    pub(crate) fn new(kind: Kind, mode: u32, parent: u32) -> Inode {
        Inode {
            kind,
            mode: mode & 0o7777,
            data: Vec::new(),
            durable: Vec::new(),
            unsynced: Vec::new(),
            reserved: 0,
            durable_reserved: 0,
            links: 0,
            opened: 0,
            entries: BTreeMap::new(),
            durable_entries: BTreeMap::new(),
            parent,
        }
    }

    /// Bytes of the disk it takes: whole blocks up to its size or reservation.
    pub(crate) fn allocated(&self) -> u64 {
        match self.kind {
            Kind::File => (self.data.len() as u64)
                .max(self.reserved)
                .next_multiple_of(BLOCK),
            Kind::Dir => 0,
        }
    }

    /// Writes `bytes` at `offset` now; durable after a flush (or at once for `dsync`).
    pub(crate) fn write(&mut self, offset: u64, bytes: &[u8], dsync: bool) {
        write_at(&mut self.data, offset, bytes);
        let change = Change::Write {
            offset,
            bytes: bytes.to_vec(),
        };
        self.unsynced.push(change);
        if dsync {
            self.sync(true);
        }
    }

    /// Sets the size now (`ftruncate`); a shrink gives back reserved space beyond it.
    pub(crate) fn resize(&mut self, len: u64) {
        apply(&mut self.data, &mut self.reserved, &Change::Resize { len });
        self.unsynced.push(Change::Resize { len });
    }

    /// Reserves space up to `end` now (`fallocate`).
    pub(crate) fn reserve(&mut self, end: u64) {
        self.reserved = self.reserved.max(end);
        self.unsynced.push(Change::Reserve { end });
    }

    /// `fsync` (`datasync` false) succeeded: every change so far is durable. `fdatasync`
    /// leaves out what reading the data back does not need: space reserved past the end
    /// of the file (`FALLOC_FL_KEEP_SIZE`), unless a later resize depends on it.
    pub(crate) fn sync(&mut self, datasync: bool) {
        let size = self.data.len() as u64;
        let changes = std::mem::take(&mut self.unsynced);
        let resized_after = |at: usize| {
            let later = &changes[at + 1..];
            later
                .iter()
                .any(|change| matches!(change, Change::Resize { .. }))
        };
        let mut kept = Vec::new();
        for (at, change) in changes.iter().enumerate() {
            match *change {
                Change::Reserve { end } if datasync && end > size && !resized_after(at) => {
                    kept.push(Change::Reserve { end });
                }
                _ => apply(&mut self.durable, &mut self.durable_reserved, change),
            }
        }
        self.unsynced = kept;
    }

    /// `fsync` failed: the unsynced changes reach the disk or not as at a crash, and are
    /// forgotten; readers still see them. How many writes were torn.
    pub(crate) fn sync_failed(&mut self, rng: &mut Rng, torn_ppm: u32) -> u64 {
        let mut torn = 0;
        for change in std::mem::take(&mut self.unsynced) {
            torn += settle(
                rng,
                torn_ppm,
                &mut self.durable,
                &mut self.durable_reserved,
                change,
            );
        }
        torn
    }

    /// A crash: the durable state plus what survives of each unsynced change becomes what
    /// readers see. How many writes were torn.
    pub(crate) fn crash(&mut self, rng: &mut Rng, torn_ppm: u32) -> u64 {
        let torn = self.sync_failed(rng, torn_ppm);
        self.data.clone_from(&self.durable);
        self.reserved = self.durable_reserved;
        self.entries.clone_from(&self.durable_entries);
        self.opened = 0;
        torn
    }
}

/// Applies an unsynced change to `image` as a crash leaves it: kept or lost at even odds,
/// or, for a write under the `torn_write` fault, torn (see [`torn_ranges`]). 1 if torn.
fn settle(
    rng: &mut Rng,
    torn_ppm: u32,
    image: &mut Vec<u8>,
    reserved: &mut u64,
    change: Change,
) -> u64 {
    if let Change::Write { offset, bytes } = &change {
        if !bytes.is_empty() && rng.chance(torn_ppm) {
            for (start, end) in torn_ranges(rng, *offset, bytes.len()) {
                write_at(image, offset + start as u64, &bytes[start..end]);
            }
            return 1;
        }
    }
    if rng.below(2) == 0 {
        apply(image, reserved, &change);
    }
    0
}

/// The parts of a write of `len` bytes at `offset` that a torn write keeps, as ranges of
/// the write's bytes, in one of three shapes drawn at even odds: a prefix cut at a sector
/// boundary (a device that writes sectors in order), a prefix cut anywhere (a device, or a
/// file system, without atomic sectors), or each sector kept or lost on its own (a device
/// that writes the sectors of one request in any order, as NVMe may). Sectors are counted
/// from the start of the file, so a sector-aligned (`O_DIRECT`) write tears on its own
/// sector boundaries. A torn write never keeps everything of a write that spans more than
/// one piece, so that a tear is a tear.
pub(crate) fn torn_ranges(rng: &mut Rng, offset: u64, len: usize) -> Vec<(usize, usize)> {
    let len64 = len as u64;
    // Where each sector of the write ends, relative to the write.
    let boundary = |at: u64| ((offset + at) / SECTOR + 1) * SECTOR - offset;
    match rng.below(3) {
        0 => {
            let mut cuts = vec![0];
            while *cuts.last().expect("non-empty") < len64 {
                cuts.push(boundary(*cuts.last().expect("non-empty")).min(len64));
            }
            let keep = cuts[rng.below(cuts.len() as u64 - 1) as usize];
            vec![(0, keep as usize)]
        }
        1 => vec![(0, rng.below(len64) as usize)],
        _ => {
            let (mut kept, mut pieces) = (Vec::new(), 0);
            let mut at = 0;
            while at < len64 {
                let end = boundary(at).min(len64);
                pieces += 1;
                if rng.below(2) == 0 {
                    kept.push((at as usize, end as usize));
                }
                at = end;
            }
            if kept.len() == pieces && pieces > 1 {
                kept.pop();
            }
            kept
        }
    }
}

fn apply(image: &mut Vec<u8>, reserved: &mut u64, change: &Change) {
    match *change {
        Change::Write { offset, ref bytes } => write_at(image, offset, bytes),
        Change::Resize { len } => {
            // A shrink gives back the reserved space beyond the new end.
            if len < image.len() as u64 {
                *reserved = (*reserved).min(len);
            }
            image.resize(
                usize::try_from(len).expect("a simulated file fits memory"),
                0,
            );
        }
        Change::Reserve { end } => *reserved = (*reserved).max(end),
    }
}

fn write_at(data: &mut Vec<u8>, offset: u64, bytes: &[u8]) {
    if bytes.is_empty() {
        return;
    }
    let offset = usize::try_from(offset).expect("a simulated file fits memory");
    if data.len() < offset + bytes.len() {
        data.resize(offset + bytes.len(), 0);
    }
    data[offset..offset + bytes.len()].copy_from_slice(bytes);
}

/// An open file description.
#[derive(Debug)]
pub(crate) struct OpenFile {
    pub(crate) inode: u32,
    pub(crate) readable: bool,
    pub(crate) writable: bool,
    /// `O_DIRECT`: offsets, lengths and buffer addresses must be multiples of [`SECTOR`].
    pub(crate) direct: bool,
    /// `O_DSYNC` or `O_SYNC`: each write is durable when it completes.
    pub(crate) dsync: bool,
    pub(crate) open: bool,
    /// The file position (for offset `u64::MAX`).
    pub(crate) position: u64,
    /// `O_APPEND`: writes go to the end of the file.
    pub(crate) append: bool,
}

/// The disk's state. Inode 0 is the root directory.
#[derive(Debug)]
pub(crate) struct Disk {
    pub(crate) inodes: Vec<Inode>,
    pub(crate) files: Vec<OpenFile>,
    /// Directory changes not durable yet, oldest first (`dirs.rs`).
    pub(crate) journal: Vec<super::dirs::DirChange>,
    pub(crate) capacity: u64,
}

impl Disk {
    /// An empty disk of `capacity` bytes holding the root and the directories `dirs`
    /// (absolute paths, made with their ancestors, all durable).
    pub(crate) fn new(capacity: u64, dirs: &[&[u8]]) -> Disk {
        let mut root = Inode::new(Kind::Dir, 0o755, 0);
        root.links = 1;
        let mut disk = Disk {
            inodes: vec![root],
            files: Vec::new(),
            journal: Vec::new(),
            capacity,
        };
        for path in dirs {
            disk.make_durable_dirs(path);
        }
        disk
    }

    pub(crate) fn inode(&self, file: u32) -> &Inode {
        &self.inodes[self.files[file as usize].inode as usize]
    }

    pub(crate) fn inode_mut(&mut self, file: u32) -> &mut Inode {
        let inode = self.files[file as usize].inode;
        &mut self.inodes[inode as usize]
    }

    /// A new open file description of `inode`.
    pub(crate) fn open(&mut self, inode: u32, flags: i32) -> u32 {
        let access = flags & libc::O_ACCMODE;
        self.inodes[inode as usize].opened += 1;
        let file = self.files.len() as u32;
        self.files.push(OpenFile {
            inode,
            readable: access == libc::O_RDONLY || access == libc::O_RDWR,
            writable: access == libc::O_WRONLY || access == libc::O_RDWR,
            direct: flags & o_direct() != 0,
            dsync: flags & (libc::O_DSYNC | libc::O_SYNC) != 0,
            open: true,
            position: 0,
            append: flags & libc::O_APPEND != 0,
        });
        file
    }

    pub(crate) fn close(&mut self, file: u32) {
        let open = &mut self.files[file as usize];
        if std::mem::replace(&mut open.open, false) {
            let inode = open.inode as usize;
            self.inodes[inode].opened -= 1;
        }
    }

    /// Bytes allocated to files that still have a name or an open description.
    pub(crate) fn used(&self) -> u64 {
        let live = |inode: &&Inode| inode.links > 0 || inode.opened > 0;
        self.inodes.iter().filter(live).map(Inode::allocated).sum()
    }

    /// How far (from the start) `file` may extend its allocation: up to its own blocks plus
    /// what the other files leave free.
    pub(crate) fn room_end(&self, file: u32) -> u64 {
        let inode = self.inode(file);
        let mine = inode.allocated();
        let others = self.used()
            - if inode.links > 0 || inode.opened > 0 {
                mine
            } else {
                0
            };
        let free = self.capacity.saturating_sub(others);
        (free / BLOCK * BLOCK).max(mine)
    }

    /// Rebuilds every inode as a crash leaves it; how many writes it tore.
    pub(crate) fn crash(&mut self, rng: &mut Rng, torn_ppm: u32) -> u64 {
        for file in &mut self.files {
            file.open = false;
        }
        self.crash_names(rng);
        let mut torn = 0;
        for inode in &mut self.inodes {
            torn += inode.crash(rng, torn_ppm);
        }
        self.relink();
        torn
    }

    /// The contents a reader sees now of the file at `path` (absolute), if it exists.
    pub(crate) fn contents(&self, path: &[u8]) -> Option<&[u8]> {
        let inode = self.lookup(0, path).ok()?;
        let inode = &self.inodes[inode as usize];
        (inode.kind == Kind::File).then_some(&inode.data[..])
    }
}

/// `O_DIRECT` where the system has it (the simulator honours it on every system).
pub(crate) const fn o_direct() -> i32 {
    #[cfg(any(target_os = "linux", target_os = "freebsd"))]
    return libc::O_DIRECT;
    #[cfg(not(any(target_os = "linux", target_os = "freebsd")))]
    return 0;
}
