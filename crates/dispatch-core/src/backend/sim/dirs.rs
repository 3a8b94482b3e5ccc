//! The simulated disk's directories: paths resolved from the root or a directory
//! descriptor, and the directory operations (create by `openat`, `mkdirat`, `unlinkat`,
//! `renameat`) with their crash semantics.
//!
//! Each directory has the entries a lookup sees now and the entries a crash starts from.
//! Every change of names (one create, mkdir, unlink or rename: a rename is one change of
//! two entries, atomic) goes into the disk's journal, oldest first. An `fsync` of a
//! directory makes durable every change that touches it, and every earlier change that set
//! a name those set (so that changes reach the disk in an order a reader could see). A
//! crash keeps or drops each change still in the journal at even odds, but drops a change
//! that sets a name an earlier dropped change set: a created file whose directory was not
//! fsynced may vanish, a rename may be undone, an unlinked file may come back. An fsync of
//! the file itself makes its data durable, never its name.

use std::os::fd::RawFd;

use super::disk::{Disk, Inode, Kind};
use super::rng::Rng;
use super::world::{Obj, World};

/// One change of names, applied whole.
#[derive(Debug)]
pub(crate) struct DirChange {
    /// `(directory, name, inode or none)`, in order.
    sets: Vec<(u32, Vec<u8>, Option<u32>)>,
}

impl DirChange {
    fn touches(&self, dir: u32) -> bool {
        self.sets.iter().any(|(d, _, _)| *d == dir)
    }

    fn shares_name(&self, other: &DirChange) -> bool {
        self.sets.iter().any(|(dir, name, _)| {
            other
                .sets
                .iter()
                .any(|(their_dir, their_name, _)| (dir, name) == (their_dir, their_name))
        })
    }
}

/// Where a path leads: an entry of a directory (which may or may not exist), or a
/// directory itself (`/`, `.`, `..`, `dir/.`).
#[derive(Debug)]
pub(crate) enum Target {
    Entry { dir: u32, name: Vec<u8> },
    Itself(u32),
}

/// The longest name, as Linux's `NAME_MAX`.
const NAME_MAX: usize = 255;

impl Disk {
    /// Resolves `path` from directory `base`: every component but the last must be an
    /// existing directory (`ENOENT`, `ENOTDIR`).
    pub(crate) fn resolve(&self, base: u32, path: &[u8]) -> Result<Target, i32> {
        if path.is_empty() {
            return Err(-libc::ENOENT);
        }
        let mut parts = path
            .split(|&byte| byte == b'/')
            .filter(|part| !part.is_empty() && *part != b".")
            .peekable();
        let mut dir = base;
        while let Some(part) = parts.next() {
            if part.len() > NAME_MAX {
                return Err(-libc::ENAMETOOLONG);
            }
            let last = parts.peek().is_none();
            if part == b".." {
                dir = self.inodes[dir as usize].parent;
                continue;
            }
            if last {
                return Ok(Target::Entry {
                    dir,
                    name: part.to_vec(),
                });
            }
            match self.inodes[dir as usize].entries.get(part) {
                None => return Err(-libc::ENOENT),
                Some(&inode) if self.inodes[inode as usize].kind != Kind::Dir => {
                    return Err(-libc::ENOTDIR)
                }
                Some(&inode) => dir = inode,
            }
        }
        Ok(Target::Itself(dir))
    }

    /// The inode `path` names from `base`.
    pub(crate) fn lookup(&self, base: u32, path: &[u8]) -> Result<u32, i32> {
        match self.resolve(base, path)? {
            Target::Itself(inode) => Ok(inode),
            Target::Entry { dir, name } => {
                let entries = &self.inodes[dir as usize].entries;
                entries.get(&name).copied().ok_or(-libc::ENOENT)
            }
        }
    }

    /// What `dir` names `name` now.
    fn entry(&self, dir: u32, name: &[u8]) -> Option<u32> {
        self.inodes[dir as usize].entries.get(name).copied()
    }

    /// A new inode.
    fn add(&mut self, inode: Inode) -> u32 {
        self.inodes.push(inode);
        self.inodes.len() as u32 - 1
    }

    /// Changes names now; durable once a directory they touch is fsynced.
    fn change(&mut self, sets: Vec<(u32, Vec<u8>, Option<u32>)>) {
        for (dir, name, value) in &sets {
            let entries = &mut self.inodes[*dir as usize].entries;
            let old = match *value {
                Some(inode) => entries.insert(name.clone(), inode),
                None => entries.remove(name),
            };
            if let Some(old) = old {
                self.inodes[old as usize].links -= 1;
            }
            if let Some(inode) = *value {
                let inode = &mut self.inodes[inode as usize];
                inode.links += 1;
                if inode.kind == Kind::Dir {
                    inode.parent = *dir;
                }
            }
        }
        self.journal.push(DirChange { sets });
    }

    /// `fsync` of directory `dir`: the changes that touch it are durable, with the earlier
    /// ones that set a name they set.
    pub(crate) fn sync_dir(&mut self, dir: u32) {
        let n = self.journal.len();
        let mut durable = vec![false; n];
        for i in (0..n).rev() {
            durable[i] = self.journal[i].touches(dir)
                || (i + 1..n).any(|j| durable[j] && self.journal[i].shares_name(&self.journal[j]));
        }
        let journal = std::mem::take(&mut self.journal);
        for (change, durable) in journal.into_iter().zip(durable) {
            if durable {
                self.apply_durable(&change);
            } else {
                self.journal.push(change);
            }
        }
    }

    fn apply_durable(&mut self, change: &DirChange) {
        for (dir, name, value) in &change.sets {
            let entries = &mut self.inodes[*dir as usize].durable_entries;
            match *value {
                Some(inode) => entries.insert(name.clone(), inode),
                None => entries.remove(name),
            };
        }
    }

    /// A crash settles the journal: each change kept or dropped at even odds, one that sets
    /// a name a dropped change set dropped too. (The inodes then take their durable
    /// entries: `Inode::crash`.)
    pub(crate) fn crash_names(&mut self, rng: &mut Rng) {
        let journal = std::mem::take(&mut self.journal);
        let mut dropped: Vec<&DirChange> = Vec::new();
        for change in &journal {
            let follows_dropped = dropped.iter().any(|lost| lost.shares_name(change));
            if !follows_dropped && rng.below(2) == 0 {
                self.apply_durable(change);
            } else {
                dropped.push(change);
            }
        }
    }

    /// Counts names and finds parents again from the entries (after a crash).
    pub(crate) fn relink(&mut self) {
        for inode in &mut self.inodes {
            inode.links = 0;
        }
        self.inodes[0].links = 1;
        let mut found = Vec::new();
        for (dir, inode) in self.inodes.iter().enumerate() {
            found.extend(inode.entries.values().map(|&child| (dir as u32, child)));
        }
        for (dir, child) in found {
            let child = &mut self.inodes[child as usize];
            child.links += 1;
            if child.kind == Kind::Dir {
                child.parent = dir;
            }
        }
    }

    /// Makes the directories of the absolute `path` that are missing, durable at once (the
    /// world's starting directories).
    pub(crate) fn make_durable_dirs(&mut self, path: &[u8]) {
        let mut dir = 0;
        for part in path
            .split(|&byte| byte == b'/')
            .filter(|part| !part.is_empty())
        {
            dir = match self.entry(dir, part) {
                Some(inode) => inode,
                None => {
                    let inode = self.add(Inode::new(Kind::Dir, 0o755, dir));
                    self.inodes[inode as usize].links = 1;
                    let parent = &mut self.inodes[dir as usize];
                    parent.entries.insert(part.to_vec(), inode);
                    parent.durable_entries.insert(part.to_vec(), inode);
                    inode
                }
            };
        }
    }

    /// Whether `inode` is `dir` or one of its ancestors (a directory cannot move into
    /// itself).
    fn is_ancestor(&self, inode: u32, mut dir: u32) -> bool {
        loop {
            if dir == inode {
                return true;
            }
            if dir == 0 {
                return false;
            }
            dir = self.inodes[dir as usize].parent;
        }
    }
}

/// `AT_EMPTY_PATH` where the system has it (macOS has none: there no flag asks for it).
const fn at_empty_path() -> i32 {
    #[cfg(not(target_vendor = "apple"))]
    return libc::AT_EMPTY_PATH;
    #[cfg(target_vendor = "apple")]
    return 0;
}

/// The access flags that write.
fn writes(flags: i32) -> bool {
    let access = flags & libc::O_ACCMODE;
    access == libc::O_WRONLY || access == libc::O_RDWR
}

impl World {
    /// The directory a path is relative to: the root for an absolute path or `AT_FDCWD`
    /// (the simulated working directory is `/`), else the directory `dir` names.
    fn base(&self, dir: RawFd, path: &[u8]) -> Result<u32, i32> {
        if path.first() == Some(&b'/') || dir == libc::AT_FDCWD {
            return Ok(0);
        }
        self.dir_inode(dir)
    }

    /// The directory inode descriptor `dir` names.
    fn dir_inode(&self, dir: RawFd) -> Result<u32, i32> {
        match self.obj(dir) {
            Some(Obj::File(file)) => {
                let inode = self.disk.files[file as usize].inode;
                match self.disk.inodes[inode as usize].kind {
                    Kind::Dir => Ok(inode),
                    Kind::File => Err(-libc::ENOTDIR),
                }
            }
            Some(Obj::Dead) => Err(-libc::EIO),
            Some(_) => Err(-libc::ENOTDIR),
            None => Err(-libc::EBADF),
        }
    }

    /// `openat(2)`: the new open file description, or `-errno`. Honours `O_CREAT`,
    /// `O_EXCL`, `O_TRUNC`, `O_DIRECTORY`, `O_APPEND`, `O_DIRECT`, `O_DSYNC`/`O_SYNC`, the
    /// access mode, and `mode`'s permission bits (no umask).
    pub(crate) fn open_file(
        &mut self,
        dir: RawFd,
        path: &[u8],
        flags: i32,
        mode: u32,
    ) -> Result<u32, i32> {
        let create = flags & libc::O_CREAT != 0;
        let inode = match self.disk.resolve(self.base(dir, path)?, path)? {
            Target::Itself(_) if create => return Err(-libc::EISDIR),
            Target::Itself(inode) => inode,
            Target::Entry { dir, name } => match self.disk.entry(dir, &name) {
                Some(_) if create && flags & libc::O_EXCL != 0 => return Err(-libc::EEXIST),
                Some(inode) => inode,
                None if !create => return Err(-libc::ENOENT),
                None if flags & libc::O_DIRECTORY != 0 => return Err(-libc::EINVAL),
                None => {
                    let inode = self.disk.add(Inode::new(Kind::File, mode, dir));
                    self.disk.change(vec![(dir, name, Some(inode))]);
                    inode
                }
            },
        };
        let node = &mut self.disk.inodes[inode as usize];
        match node.kind {
            Kind::Dir if writes(flags) || create => return Err(-libc::EISDIR),
            Kind::File if flags & libc::O_DIRECTORY != 0 => return Err(-libc::ENOTDIR),
            Kind::Dir => {}
            Kind::File => {
                let truncate = flags & libc::O_TRUNC != 0 && writes(flags);
                if truncate && (!node.data.is_empty() || node.reserved > 0) {
                    node.resize(0);
                }
            }
        }
        Ok(self.disk.open(inode, flags))
    }

    /// `mkdirat(2)`: `0` or `-errno`.
    pub(crate) fn make_dir(&mut self, dir: RawFd, path: &[u8], mode: u32) -> i32 {
        let (dir, name) = match self
            .base(dir, path)
            .and_then(|b| self.disk.resolve(b, path))
        {
            Err(errno) => return errno,
            Ok(Target::Itself(_)) => return -libc::EEXIST,
            Ok(Target::Entry { dir, name }) => (dir, name),
        };
        if self.disk.entry(dir, &name).is_some() {
            return -libc::EEXIST;
        }
        let inode = self.disk.add(Inode::new(Kind::Dir, mode, dir));
        self.disk.change(vec![(dir, name, Some(inode))]);
        0
    }

    /// `unlinkat(2)`: `0` or `-errno`; `flags` 0 or `AT_REMOVEDIR`.
    pub(crate) fn unlink(&mut self, dir: RawFd, path: &[u8], flags: i32) -> i32 {
        if flags & !libc::AT_REMOVEDIR != 0 {
            return -libc::EINVAL;
        }
        let remove_dir = flags & libc::AT_REMOVEDIR != 0;
        let (dir, name) = match self
            .base(dir, path)
            .and_then(|b| self.disk.resolve(b, path))
        {
            Err(errno) => return errno,
            Ok(Target::Itself(0)) if remove_dir => return -libc::EBUSY,
            Ok(Target::Itself(_)) if remove_dir => return -libc::EINVAL,
            Ok(Target::Itself(_)) => return -libc::EISDIR,
            Ok(Target::Entry { dir, name }) => (dir, name),
        };
        let Some(inode) = self.disk.entry(dir, &name) else {
            return -libc::ENOENT;
        };
        let node = &self.disk.inodes[inode as usize];
        match (node.kind, remove_dir) {
            (Kind::Dir, false) => return -libc::EISDIR,
            (Kind::File, true) => return -libc::ENOTDIR,
            (Kind::Dir, true) if !node.entries.is_empty() => return -libc::ENOTEMPTY,
            _ => {}
        }
        self.disk.change(vec![(dir, name, None)]);
        0
    }

    /// `renameat2(2)` with `flags` 0 or `RENAME_NOREPLACE`: `0` or `-errno`.
    pub(crate) fn rename(&mut self, old: (RawFd, &[u8]), new: (RawFd, &[u8]), flags: u32) -> i32 {
        if flags & !crate::RENAME_NOREPLACE != 0 {
            return -libc::EINVAL;
        }
        let resolve = |world: &World, (dir, path): (RawFd, &[u8])| match world
            .base(dir, path)
            .and_then(|b| world.disk.resolve(b, path))?
        {
            Target::Itself(_) => Err(-libc::EBUSY),
            Target::Entry { dir, name } => Ok((dir, name)),
        };
        let ((old_dir, old_name), (new_dir, new_name)) =
            match (resolve(self, old), resolve(self, new)) {
                (Ok(old), Ok(new)) => (old, new),
                (Err(errno), _) | (_, Err(errno)) => return errno,
            };
        let Some(source) = self.disk.entry(old_dir, &old_name) else {
            return -libc::ENOENT;
        };
        let replaced = self.disk.entry(new_dir, &new_name);
        if replaced.is_some() && flags & crate::RENAME_NOREPLACE != 0 {
            return -libc::EEXIST;
        }
        if replaced == Some(source) {
            return 0;
        }
        if let Err(errno) = self.check_rename(source, replaced, new_dir) {
            return errno;
        }
        let sets = vec![(old_dir, old_name, None), (new_dir, new_name, Some(source))];
        self.disk.change(sets);
        0
    }

    /// The kinds a rename may not mix: a directory over a file or a non-empty directory, or
    /// into itself; a file over a directory.
    fn check_rename(&self, source: u32, replaced: Option<u32>, new_dir: u32) -> Result<(), i32> {
        let kind = |inode: u32| self.disk.inodes[inode as usize].kind;
        match (kind(source), replaced.map(|inode| (kind(inode), inode))) {
            (Kind::Dir, _) if self.disk.is_ancestor(source, new_dir) => Err(-libc::EINVAL),
            (Kind::Dir, Some((Kind::File, _))) => Err(-libc::ENOTDIR),
            (Kind::Dir, Some((Kind::Dir, inode)))
                if !self.disk.inodes[inode as usize].entries.is_empty() =>
            {
                Err(-libc::ENOTEMPTY)
            }
            (Kind::File, Some((Kind::Dir, _))) => Err(-libc::EISDIR),
            _ => Ok(()),
        }
    }

    /// The inode `statx(2)` describes: `path` from `dir`, or with `AT_EMPTY_PATH` and an
    /// empty path the descriptor `dir` itself.
    pub(crate) fn stat_inode(&self, dir: RawFd, path: &[u8], flags: i32) -> Result<u32, i32> {
        if path.is_empty() && flags & at_empty_path() != 0 {
            return match self.obj(dir) {
                _ if dir == libc::AT_FDCWD => Ok(0),
                Some(Obj::File(file)) => Ok(self.disk.files[file as usize].inode),
                Some(Obj::Dead) => Err(-libc::EIO),
                Some(_) => Err(-libc::EOPNOTSUPP),
                None => Err(-libc::EBADF),
            };
        }
        self.disk.lookup(self.base(dir, path)?, path)
    }
}
