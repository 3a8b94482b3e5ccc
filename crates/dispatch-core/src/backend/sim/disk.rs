//! The simulated disk: files by path, each with the bytes a reader sees now and the bytes
//! that would survive a crash (what the last successful fsync saw). A crash rebuilds every
//! file from its durable bytes plus each write made since, kept, lost or torn (a prefix
//! kept) at random. Creating, truncating and removing files are durable at once.

use std::collections::BTreeMap;

use super::rng::Rng;
use super::world::{Fault, World};

/// One file.
#[derive(Default)]
struct Inode {
    data: Vec<u8>,
    durable: Vec<u8>,
    /// Writes since the last fsync, oldest first: `(offset, bytes)`.
    unsynced: Vec<(u64, Vec<u8>)>,
}

/// An open file description.
struct OpenFile {
    inode: u32,
    readable: bool,
    writable: bool,
    open: bool,
}

/// The disk's state.
#[derive(Default)]
pub(crate) struct Disk {
    inodes: Vec<Inode>,
    paths: BTreeMap<Vec<u8>, u32>,
    files: Vec<OpenFile>,
}

impl Disk {
    pub(crate) fn close(&mut self, file: u32) {
        self.files[file as usize].open = false;
    }

    /// Rebuilds every file as a crash leaves it; how many writes it tore.
    pub(crate) fn crash(&mut self, rng: &mut Rng, torn_ppm: u32) -> u64 {
        let mut torn = 0;
        for file in &mut self.files {
            file.open = false;
        }
        for inode in &mut self.inodes {
            let mut image = std::mem::take(&mut inode.durable);
            for (offset, bytes) in std::mem::take(&mut inode.unsynced) {
                let kept = if rng.chance(torn_ppm) {
                    torn += 1;
                    rng.below(bytes.len() as u64) as usize
                } else if rng.below(2) == 0 {
                    bytes.len()
                } else {
                    0
                };
                apply(&mut image, offset, &bytes[..kept]);
            }
            inode.data.clone_from(&image);
            inode.durable = image;
        }
        torn
    }

    /// The contents a reader sees now of the file at `path`, if it exists.
    pub(crate) fn contents(&self, path: &[u8]) -> Option<&[u8]> {
        let &inode = self.paths.get(path)?;
        Some(&self.inodes[inode as usize].data)
    }
}

fn apply(data: &mut Vec<u8>, offset: u64, bytes: &[u8]) {
    if bytes.is_empty() {
        return;
    }
    let offset = offset as usize;
    if data.len() < offset + bytes.len() {
        data.resize(offset + bytes.len(), 0);
    }
    data[offset..offset + bytes.len()].copy_from_slice(bytes);
}

impl World {
    /// `openat(2)` on the simulated disk (the directory is ignored: one flat namespace of
    /// paths): the open file's id, or `-errno`.
    pub(crate) fn open_file(&mut self, path: &[u8], flags: i32) -> Result<u32, i32> {
        let disk = &mut self.disk;
        let inode = match disk.paths.get(path) {
            Some(_) if flags & libc::O_CREAT != 0 && flags & libc::O_EXCL != 0 => {
                return Err(-libc::EEXIST)
            }
            Some(&inode) => inode,
            None if flags & libc::O_CREAT != 0 => {
                let inode = disk.inodes.len() as u32;
                disk.inodes.push(Inode::default());
                disk.paths.insert(path.to_vec(), inode);
                inode
            }
            None => return Err(-libc::ENOENT),
        };
        let access = flags & libc::O_ACCMODE;
        let writable = access == libc::O_WRONLY || access == libc::O_RDWR;
        if flags & libc::O_TRUNC != 0 && writable {
            let inode = &mut disk.inodes[inode as usize];
            inode.data.clear();
            inode.durable.clear();
            inode.unsynced.clear();
        }
        let file = disk.files.len() as u32;
        disk.files.push(OpenFile {
            inode,
            readable: access == libc::O_RDONLY || access == libc::O_RDWR,
            writable,
            open: true,
        });
        Ok(file)
    }

    fn eio(&mut self) -> bool {
        let fired = self.rng.chance(self.faults.disk_eio);
        if fired {
            self.fault(Fault::DiskEio);
        }
        fired
    }

    /// `pread`: copies up to `max` bytes at `offset` into `sink`; the count or `-errno`.
    pub(crate) fn read_file(
        &mut self,
        file: u32,
        offset: u64,
        max: usize,
        sink: &mut dyn FnMut(&[u8]),
    ) -> i32 {
        let open = &self.disk.files[file as usize];
        if !open.open || !open.readable {
            return -libc::EBADF;
        }
        let inode = open.inode;
        if self.eio() {
            return -libc::EIO;
        }
        let data = &self.disk.inodes[inode as usize].data;
        let start = (offset as usize).min(data.len());
        let mut n = (data.len() - start).min(max).min(i32::MAX as usize);
        if n > 1 && self.rng.chance(self.faults.short_io) {
            n = self.rng.between(1, n as u64 - 1) as usize;
            self.fault(Fault::ShortIo);
        }
        sink(&self.disk.inodes[inode as usize].data[start..start + n]);
        n as i32
    }

    /// `pwrite`: the count written (possibly short) or `-errno`.
    pub(crate) fn write_file(&mut self, file: u32, offset: u64, bytes: &[u8]) -> i32 {
        let open = &self.disk.files[file as usize];
        if !open.open || !open.writable {
            return -libc::EBADF;
        }
        let inode = open.inode;
        if self.eio() {
            return -libc::EIO;
        }
        let mut n = bytes.len().min(i32::MAX as usize);
        if n > 1 && self.rng.chance(self.faults.short_io) {
            n = self.rng.between(1, n as u64 - 1) as usize;
            self.fault(Fault::ShortIo);
        }
        let inode = &mut self.disk.inodes[inode as usize];
        apply(&mut inode.data, offset, &bytes[..n]);
        inode.unsynced.push((offset, bytes[..n].to_vec()));
        n as i32
    }

    /// `fsync`: what the file holds now survives a crash; `0` or `-errno` (after `EIO`
    /// nothing more is durable than before).
    pub(crate) fn fsync_file(&mut self, file: u32) -> i32 {
        let open = &self.disk.files[file as usize];
        if !open.open {
            return -libc::EBADF;
        }
        let inode = open.inode;
        if self.eio() {
            return -libc::EIO;
        }
        let inode = &mut self.disk.inodes[inode as usize];
        inode.durable.clone_from(&inode.data);
        inode.unsynced.clear();
        0
    }
}
