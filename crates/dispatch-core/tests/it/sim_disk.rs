//! The simulator's disk through the public API: every storage operation and its error
//! cases, the crash semantics (what `fsync`, `fdatasync` and a directory's `fsync` keep,
//! torn writes) and the disk faults (`EIO`, `ENOSPC`). Each test drives one world through
//! [`Disk`], which runs one operation at a time to its callback; crash tests run many seeds
//! and check both what must hold on every one and that the outcomes a crash may choose do
//! all occur.

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};

use dispatch_loop::sim::{Faults, Sim, SimOptions};
use dispatch_loop::{AlignedBuf, FileStat, Io, Options, AT_FDCWD, RENAME_NOREPLACE};

/// What an operation's callback got: a value, or the errno.
enum Value {
    Unit,
    Fd(OwnedFd),
    Count(usize, Vec<u8>),
    Aligned(usize),
    Vectored(usize, Vec<Vec<u8>>),
    Stat(FileStat),
}

type Answer = Result<Value, i32>;

fn errno<T>(result: std::io::Result<T>) -> Result<T, i32> {
    result.map_err(|error| error.raw_os_error().expect("an errno"))
}

/// One simulated world and a loop on it, run one operation at a time.
struct Disk {
    sim: Sim,
    io: Option<Io<Vec<Answer>>>,
    got: Vec<Answer>,
}

fn c(path: &str) -> CString {
    CString::new(path).unwrap()
}

const DIRECTORY: i32 = libc::O_RDONLY | libc::O_DIRECTORY;
/// Linux's values, which the simulator takes on every system.
const FALLOC_FL_KEEP_SIZE: i32 = 1;
const FALLOC_FL_PUNCH_HOLE: i32 = 2;
const RWF_HIPRI: i32 = 1;
const RWF_DSYNC: i32 = 2;
/// `O_DIRECT` and `AT_EMPTY_PATH`; macOS has neither, so there nobody can ask the
/// simulator for them.
#[cfg(any(target_os = "linux", target_os = "freebsd"))]
const O_DIRECT: i32 = libc::O_DIRECT;
#[cfg(not(any(target_os = "linux", target_os = "freebsd")))]
const O_DIRECT: i32 = 0;
#[cfg(not(target_vendor = "apple"))]
const AT_EMPTY_PATH: i32 = libc::AT_EMPTY_PATH;
#[cfg(target_vendor = "apple")]
const AT_EMPTY_PATH: i32 = 0;
const CREATE: i32 = libc::O_CREAT | libc::O_RDWR;

impl Disk {
    fn check(seed: u64, faults: Faults, capacity: u64) -> Disk {
        let mut options = SimOptions::new(seed);
        options.faults = faults;
        options.disk_capacity_bytes = capacity;
        let sim = Sim::new(&options).expect("a world");
        let io = Io::new_sim(&Options::new(8), &sim).expect("a loop");
        Disk {
            sim,
            io: Some(io),
            got: Vec::new(),
        }
    }

    fn new(seed: u64) -> Disk {
        Disk::check(seed, Faults::NONE, 1 << 30)
    }

    fn io(&mut self) -> &mut Io<Vec<Answer>> {
        self.io.as_mut().expect("a loop")
    }

    fn run(&mut self) -> Answer {
        let io = self.io.as_mut().expect("a loop");
        io.run_until_idle(&mut self.got).expect("no deadlock");
        assert_eq!(self.got.len(), 1, "one operation, one answer");
        self.got.pop().expect("an answer")
    }

    fn unit(&mut self) -> Result<(), i32> {
        self.run().map(|_| ())
    }

    fn open(&mut self, path: &str, flags: i32) -> Result<OwnedFd, i32> {
        let on_open = |got: &mut Vec<Answer>, _: &mut Io<_>, _, fd| {
            got.push(errno(fd).map(Value::Fd));
        };
        self.io()
            .openat(0, AT_FDCWD, c(path), flags, 0o640, on_open)
            .unwrap();
        match self.run()? {
            Value::Fd(fd) => Ok(fd),
            _ => unreachable!(),
        }
    }

    fn open_at(&mut self, dir: &OwnedFd, path: &str, flags: i32) -> Result<OwnedFd, i32> {
        let on_open = |got: &mut Vec<Answer>, _: &mut Io<_>, _, fd| {
            got.push(errno(fd).map(Value::Fd));
        };
        let dir = dir.as_raw_fd();
        self.io()
            .openat(0, dir, c(path), flags, 0o640, on_open)
            .unwrap();
        match self.run()? {
            Value::Fd(fd) => Ok(fd),
            _ => unreachable!(),
        }
    }

    fn write(&mut self, fd: &OwnedFd, offset: u64, bytes: &[u8]) -> Result<usize, i32> {
        let on_write = |got: &mut Vec<Answer>, _: &mut Io<_>, _, (n, buf)| {
            got.push(errno(n).map(|n| Value::Count(n, buf)));
        };
        let fd = fd.as_raw_fd();
        self.io()
            .write(0, fd, bytes.to_vec(), offset, on_write)
            .unwrap();
        match self.run()? {
            Value::Count(n, _) => Ok(n),
            _ => unreachable!(),
        }
    }

    fn write_aligned(&mut self, fd: &OwnedFd, offset: u64, bytes: &[u8]) -> Result<usize, i32> {
        let on_write = |got: &mut Vec<Answer>, _: &mut Io<_>, _, (n, _): (_, AlignedBuf)| {
            got.push(errno(n).map(Value::Aligned));
        };
        let mut buf = AlignedBuf::new(bytes.len(), 4096).unwrap();
        buf.extend_from_slice(bytes);
        self.io()
            .write(0, fd.as_raw_fd(), buf, offset, on_write)
            .unwrap();
        match self.run()? {
            Value::Aligned(n) => Ok(n),
            _ => unreachable!(),
        }
    }

    fn read(&mut self, fd: &OwnedFd, offset: u64, len: usize) -> Result<Vec<u8>, i32> {
        let on_read = |got: &mut Vec<Answer>, _: &mut Io<_>, _, (n, buf)| {
            got.push(errno(n).map(|n| Value::Count(n, buf)));
        };
        let fd = fd.as_raw_fd();
        self.io()
            .read(0, fd, Vec::with_capacity(len), offset, on_read)
            .unwrap();
        match self.run()? {
            Value::Count(_, buf) => Ok(buf),
            _ => unreachable!(),
        }
    }

    fn on_unit(got: &mut Vec<Answer>, _: &mut Io<Vec<Answer>>, _: u64, r: std::io::Result<()>) {
        got.push(errno(r).map(|()| Value::Unit));
    }

    fn fsync(&mut self, fd: &OwnedFd) -> Result<(), i32> {
        self.io().fsync(0, fd.as_raw_fd(), Disk::on_unit).unwrap();
        self.unit()
    }

    fn fdatasync(&mut self, fd: &OwnedFd) -> Result<(), i32> {
        self.io()
            .fdatasync(0, fd.as_raw_fd(), Disk::on_unit)
            .unwrap();
        self.unit()
    }

    /// Opens the directory `path` and fsyncs it.
    fn sync_dir(&mut self, path: &str) {
        let dir = self.open(path, DIRECTORY).expect("a directory");
        self.fsync(&dir).expect("a directory syncs");
        self.close(dir);
    }

    fn fallocate(&mut self, fd: &OwnedFd, mode: i32, offset: u64, len: u64) -> Result<(), i32> {
        let fd = fd.as_raw_fd();
        self.io()
            .fallocate(0, fd, mode, offset, len, Disk::on_unit)
            .unwrap();
        self.unit()
    }

    fn ftruncate(&mut self, fd: &OwnedFd, len: u64) -> Result<(), i32> {
        self.io()
            .ftruncate(0, fd.as_raw_fd(), len, Disk::on_unit)
            .unwrap();
        self.unit()
    }

    fn statx(&mut self, dir: i32, path: &str, flags: i32) -> Result<FileStat, i32> {
        let on_stat = |got: &mut Vec<Answer>, _: &mut Io<_>, _, stat| {
            got.push(errno(stat).map(Value::Stat));
        };
        self.io().statx(0, dir, c(path), flags, on_stat).unwrap();
        match self.run()? {
            Value::Stat(stat) => Ok(stat),
            _ => unreachable!(),
        }
    }

    fn rename(&mut self, old: &str, new: &str, flags: u32) -> Result<(), i32> {
        let (old, new) = (c(old), c(new));
        let io = self.io();
        io.renameat(0, AT_FDCWD, old, AT_FDCWD, new, flags, Disk::on_unit)
            .unwrap();
        self.unit()
    }

    fn unlink(&mut self, path: &str, flags: i32) -> Result<(), i32> {
        self.io()
            .unlinkat(0, AT_FDCWD, c(path), flags, Disk::on_unit)
            .unwrap();
        self.unit()
    }

    fn mkdir(&mut self, path: &str) -> Result<(), i32> {
        self.io()
            .mkdirat(0, AT_FDCWD, c(path), 0o750, Disk::on_unit)
            .unwrap();
        self.unit()
    }

    fn close(&mut self, fd: OwnedFd) {
        self.io().close(0, fd, Disk::on_unit).unwrap();
        self.unit().expect("close");
    }

    /// A power loss and a restart: the descriptors `dead` (dead now) are closed through a
    /// new loop on the same world.
    fn crash(&mut self, dead: Vec<OwnedFd>) {
        self.sim.crash();
        self.io = None;
        self.io = Some(Io::new_sim(&Options::new(8), &self.sim).expect("a loop"));
        for fd in dead {
            self.close(fd);
        }
    }

    /// Closes what is left and checks nothing stays open.
    fn finish(mut self, open: Vec<OwnedFd>) {
        for fd in open {
            self.close(fd);
        }
        assert_eq!(self.sim.open_descriptors(), 0);
    }
}

#[test]
fn directories_are_objects_with_their_error_cases() {
    let mut disk = Disk::new(1);
    assert_eq!(disk.mkdir("/d"), Ok(()));
    assert_eq!(disk.mkdir("/d"), Err(libc::EEXIST));
    assert_eq!(disk.mkdir("/missing/x"), Err(libc::ENOENT));
    let file = disk.open("/f", CREATE).unwrap();
    assert_eq!(disk.mkdir("/f/x"), Err(libc::ENOTDIR));
    assert_eq!(disk.open("/f/x", CREATE).err(), Some(libc::ENOTDIR));
    assert_eq!(disk.open("/f", DIRECTORY).err(), Some(libc::ENOTDIR));
    assert_eq!(disk.open("/d", libc::O_RDWR).err(), Some(libc::EISDIR));
    assert_eq!(
        disk.open("/nothing", libc::O_RDONLY).err(),
        Some(libc::ENOENT)
    );
    assert_eq!(
        disk.open("/f", CREATE | libc::O_EXCL).err(),
        Some(libc::EEXIST)
    );
    // Paths relative to a directory descriptor, and the directory itself opened.
    let dir = disk.open("/d", DIRECTORY).unwrap();
    let inner = disk.open_at(&dir, "g", CREATE).unwrap();
    assert_eq!(disk.write(&inner, 0, b"inner"), Ok(5));
    assert_eq!(
        disk.sim.file_contents("/d/g").as_deref(),
        Some(&b"inner"[..])
    );
    assert_eq!(disk.open_at(&file, "g", CREATE).err(), Some(libc::ENOTDIR));
    assert_eq!(disk.read(&dir, 0, 16), Err(libc::EISDIR));
    assert_eq!(disk.unlink("/d", 0), Err(libc::EISDIR));
    assert_eq!(disk.unlink("/f", libc::AT_REMOVEDIR), Err(libc::ENOTDIR));
    assert_eq!(disk.unlink("/d", libc::AT_REMOVEDIR), Err(libc::ENOTEMPTY));
    assert_eq!(disk.unlink("/d/missing", 0), Err(libc::ENOENT));
    assert_eq!(disk.unlink("/d/g", 0), Ok(()));
    assert_eq!(disk.unlink("/d", libc::AT_REMOVEDIR), Ok(()));
    assert_eq!(disk.unlink("/", libc::AT_REMOVEDIR), Err(libc::EBUSY));
    assert_eq!(disk.unlink("/f", 0x4000), Err(libc::EINVAL));
    // An unlinked file stays readable through a descriptor still open.
    assert_eq!(disk.read(&inner, 0, 16).as_deref(), Ok(&b"inner"[..]));
    // The world starts with the temporary directory, so programs that use it run.
    let tmp = std::env::temp_dir().join("sim-disk");
    assert!(disk.open(tmp.to_str().unwrap(), CREATE).is_ok_and(|fd| {
        disk.close(fd);
        true
    }));
    disk.finish(vec![file, dir, inner]);
}

#[test]
fn rename_replaces_or_refuses_and_keeps_the_kinds_apart() {
    let mut disk = Disk::new(2);
    let a = disk.open("/a", CREATE).unwrap();
    disk.write(&a, 0, b"from a").unwrap();
    let b = disk.open("/b", CREATE).unwrap();
    assert_eq!(disk.rename("/a", "/b", RENAME_NOREPLACE), Err(libc::EEXIST));
    assert_eq!(disk.rename("/a", "/b", 2), Err(libc::EINVAL));
    assert_eq!(disk.rename("/a", "/b", 0), Ok(()));
    assert_eq!(disk.sim.file_contents("/a"), None);
    assert_eq!(
        disk.sim.file_contents("/b").as_deref(),
        Some(&b"from a"[..])
    );
    assert_eq!(disk.rename("/a", "/c", 0), Err(libc::ENOENT));
    assert_eq!(disk.rename("/b", "/b", RENAME_NOREPLACE), Err(libc::EEXIST));
    disk.mkdir("/d").unwrap();
    disk.mkdir("/e").unwrap();
    disk.mkdir("/e/inside").unwrap();
    assert_eq!(disk.rename("/d", "/d/sub", 0), Err(libc::EINVAL));
    assert_eq!(disk.rename("/d", "/e", 0), Err(libc::ENOTEMPTY));
    assert_eq!(disk.rename("/d", "/b", 0), Err(libc::ENOTDIR));
    assert_eq!(disk.rename("/b", "/e", 0), Err(libc::EISDIR));
    assert_eq!(disk.rename("/b", "/e/inside/b", RENAME_NOREPLACE), Ok(()));
    assert_eq!(disk.rename("/d", "/e/inside/d", 0), Ok(()));
    let stat = disk.statx(AT_FDCWD, "/e/inside/d", 0).unwrap();
    assert!(stat.is_dir());
    disk.finish(vec![a, b]);
}

#[test]
fn statx_reports_size_mode_blocks_and_the_direct_io_alignment() {
    let mut disk = Disk::new(3);
    let file = disk.open("/f", CREATE).unwrap();
    disk.write(&file, 0, &[1; 5000]).unwrap();
    let stat = disk.statx(AT_FDCWD, "/f", 0).unwrap();
    assert!(stat.is_file());
    assert_eq!((stat.size, stat.mode & 0o777, stat.nlink), (5000, 0o640, 1));
    assert_eq!(stat.blocks, 8192 / 512);
    assert_eq!((stat.dio_mem_align, stat.dio_offset_align), (512, 512));
    // fallocate mode 0 grows the file; KEEP_SIZE reserves only.
    assert_eq!(disk.fallocate(&file, 0, 0, 65536), Ok(()));
    let (dir, path, flags) = match AT_EMPTY_PATH {
        0 => (AT_FDCWD, "/f", 0),
        flag => (file.as_raw_fd(), "", flag),
    };
    let stat = disk.statx(dir, path, flags).unwrap();
    assert_eq!((stat.size, stat.blocks), (65536, 128));
    assert_eq!(
        disk.fallocate(&file, FALLOC_FL_KEEP_SIZE, 0, 1 << 17),
        Ok(())
    );
    let stat = disk.statx(AT_FDCWD, "/f", 0).unwrap();
    assert_eq!((stat.size, stat.blocks), (65536, 256));
    let punch = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE;
    assert_eq!(disk.fallocate(&file, punch, 0, 4096), Err(libc::EOPNOTSUPP));
    assert_eq!(disk.fallocate(&file, 0, 0, 0), Err(libc::EINVAL));
    // ftruncate cuts (giving the reservation back) and extends with zeros.
    assert_eq!(disk.ftruncate(&file, 10), Ok(()));
    let stat = disk.statx(AT_FDCWD, "/f", 0).unwrap();
    assert_eq!((stat.size, stat.blocks), (10, 8));
    assert_eq!(disk.ftruncate(&file, 20), Ok(()));
    assert_eq!(
        disk.read(&file, 0, 64).unwrap(),
        [[1; 10], [0; 10]].concat()
    );
    let read_only = disk.open("/f", libc::O_RDONLY).unwrap();
    assert_eq!(disk.ftruncate(&read_only, 0), Err(libc::EINVAL));
    assert_eq!(disk.fallocate(&read_only, 0, 0, 1), Err(libc::EBADF));
    assert_eq!(disk.write(&read_only, 0, b"x"), Err(libc::EBADF));
    assert!(disk.statx(AT_FDCWD, "/", 0).unwrap().is_dir());
    assert_eq!(
        disk.statx(AT_FDCWD, "/nothing", 0).err(),
        Some(libc::ENOENT)
    );
    disk.finish(vec![file, read_only]);
}

/// Writes two buffers as one vectored write with `flags`; the count.
fn write_vectored(disk: &mut Disk, fd: &OwnedFd, flags: i32) -> Result<usize, i32> {
    let on_write = |got: &mut Vec<Answer>, _: &mut Io<_>, _, (n, bufs)| {
        got.push(errno(n).map(|n| Value::Vectored(n, bufs)));
    };
    let bufs = vec![b"head".to_vec(), b"er and body".to_vec()];
    let fd = fd.as_raw_fd();
    disk.io()
        .write_vectored(0, fd, bufs, 0, flags, on_write)
        .unwrap();
    match disk.run()? {
        Value::Vectored(n, _) => Ok(n),
        _ => unreachable!(),
    }
}

#[test]
fn vectored_reads_and_writes_with_their_flags() {
    let mut disk = Disk::new(4);
    let file = disk.open("/v", CREATE).unwrap();
    assert_eq!(
        write_vectored(&mut disk, &file, RWF_HIPRI),
        Err(libc::EOPNOTSUPP)
    );
    assert_eq!(write_vectored(&mut disk, &file, 0), Ok(15));
    let on_read = |got: &mut Vec<Answer>, _: &mut Io<_>, _, (n, bufs)| {
        got.push(errno(n).map(|n| Value::Vectored(n, bufs)));
    };
    let bufs = vec![Vec::with_capacity(6), Vec::with_capacity(32)];
    disk.io()
        .read_vectored(0, file.as_raw_fd(), bufs, 0, 0, on_read)
        .unwrap();
    let Ok(Value::Vectored(15, bufs)) = disk.run() else {
        panic!("a vectored read of 15 bytes");
    };
    assert_eq!(bufs, [b"header".to_vec(), b" and body".to_vec()]);
    disk.finish(vec![file]);
}

/// One seed of "write, make it durable in one of several ways, crash": what survived.
fn survives(seed: u64, durable_by: &str) -> Option<Vec<u8>> {
    let mut faults = Faults::NONE;
    faults.torn_write = 300_000;
    let mut disk = Disk::check(seed, faults, 1 << 30);
    let file = disk.open("/w", CREATE).unwrap();
    disk.sync_dir("/");
    match durable_by {
        "dsync" => assert_eq!(write_vectored(&mut disk, &file, RWF_DSYNC), Ok(15)),
        "fdatasync" => {
            assert_eq!(disk.write(&file, 0, b"header and body"), Ok(15));
            disk.fdatasync(&file).unwrap();
        }
        "o_dsync" => {
            let dsync = disk.open("/w", libc::O_WRONLY | libc::O_DSYNC).unwrap();
            assert_eq!(disk.write(&dsync, 0, b"header and body"), Ok(15));
            disk.close(dsync);
        }
        _ => assert_eq!(disk.write(&file, 0, b"header and body"), Ok(15)),
    }
    // More written after, never synced: kept, lost or torn.
    assert_eq!(disk.write(&file, 15, &[7; 1000]), Ok(1000));
    disk.crash(vec![file]);
    let survived = disk.sim.file_contents("/w");
    disk.finish(Vec::new());
    survived
}

#[test]
fn data_flushed_by_fdatasync_or_dsync_survives_every_crash_and_unsynced_data_may_not() {
    for durable_by in ["fdatasync", "dsync", "o_dsync"] {
        for seed in 0..64 {
            let survived = survives(seed, durable_by).expect("the name was synced");
            assert_eq!(
                &survived[..15],
                b"header and body",
                "{durable_by}, seed {seed}"
            );
        }
    }
    let outcomes: Vec<usize> = (0..64)
        .map(|seed| {
            survives(seed, "nothing")
                .expect("the name was synced")
                .len()
        })
        .collect();
    assert!(outcomes.contains(&0), "an unsynced write is sometimes lost");
    assert!(outcomes.contains(&1015), "and sometimes kept");
}

/// One seed: a file created and fsynced, renamed, the directory fsynced after the rename
/// or not, a crash. Which names exist after it.
fn rename_then_crash(seed: u64, sync_after: bool) -> (bool, bool) {
    let mut disk = Disk::new(seed);
    disk.mkdir("/dir").unwrap();
    let file = disk.open("/dir/tmp", CREATE).unwrap();
    disk.write(&file, 0, b"contents").unwrap();
    disk.fsync(&file).unwrap();
    disk.sync_dir("/");
    disk.sync_dir("/dir");
    disk.rename("/dir/tmp", "/dir/final", 0).unwrap();
    if sync_after {
        disk.sync_dir("/dir");
    }
    disk.crash(vec![file]);
    let names = (
        disk.sim.file_contents("/dir/tmp").is_some(),
        disk.sim.file_contents("/dir/final").is_some(),
    );
    for name in ["/dir/tmp", "/dir/final"] {
        if let Some(contents) = disk.sim.file_contents(name) {
            assert_eq!(contents, b"contents", "seed {seed}");
        }
    }
    disk.finish(Vec::new());
    names
}

#[test]
fn a_rename_survives_a_crash_only_once_its_directory_is_fsynced() {
    let before: Vec<(bool, bool)> = (0..64).map(|seed| rename_then_crash(seed, false)).collect();
    // Atomic: one name or the other, never both, never neither.
    assert!(before.iter().all(|&(tmp, fin)| tmp != fin), "{before:?}");
    assert!(
        before.contains(&(true, false)),
        "the rename is sometimes undone"
    );
    assert!(before.contains(&(false, true)), "and sometimes kept");
    for seed in 0..64 {
        assert_eq!(rename_then_crash(seed, true), (false, true), "seed {seed}");
    }
}

/// One seed: names made (a file, a directory, an unlink), a crash, with the parent fsynced
/// or not; which of them survived.
fn names_then_crash(seed: u64, sync: bool) -> (bool, bool, bool) {
    let mut disk = Disk::new(seed);
    let old = disk.open("/old", CREATE).unwrap();
    disk.sync_dir("/");
    let file = disk.open("/new", CREATE).unwrap();
    disk.write(&file, 0, b"synced").unwrap();
    disk.fsync(&file).unwrap();
    disk.mkdir("/sub").unwrap();
    disk.unlink("/old", 0).unwrap();
    if sync {
        disk.sync_dir("/");
    }
    disk.crash(vec![old, file]);
    let found = |disk: &mut Disk, path| disk.statx(AT_FDCWD, path, 0).is_ok();
    let names = (
        found(&mut disk, "/new"),
        found(&mut disk, "/sub"),
        found(&mut disk, "/old"),
    );
    disk.finish(Vec::new());
    names
}

#[test]
fn creates_mkdirs_and_unlinks_are_durable_only_after_the_directory_fsync() {
    let before: Vec<_> = (0..64).map(|seed| names_then_crash(seed, false)).collect();
    assert!(
        before.iter().any(|names| !names.0),
        "a fsynced file without its name vanishes"
    );
    assert!(
        before.iter().any(|names| !names.1),
        "an unsynced mkdir can vanish"
    );
    assert!(
        before.iter().any(|names| names.2),
        "an unsynced unlink can be undone"
    );
    assert!(before.contains(&(true, true, false)), "or all kept");
    for seed in 0..64 {
        assert_eq!(
            names_then_crash(seed, true),
            (true, true, false),
            "seed {seed}"
        );
    }
}

/// One seed: the size set by ftruncate (and fallocate) is durable after fsync, not before.
fn size_after_crash(seed: u64, sync: bool) -> u64 {
    let mut disk = Disk::new(seed);
    let file = disk.open("/s", CREATE).unwrap();
    disk.sync_dir("/");
    disk.write(&file, 0, &[9; 8192]).unwrap();
    disk.fsync(&file).unwrap();
    disk.ftruncate(&file, 100).unwrap();
    disk.fallocate(&file, 0, 0, 1000).unwrap();
    if sync {
        disk.fdatasync(&file).unwrap();
    }
    disk.crash(vec![file]);
    let size = disk.statx(AT_FDCWD, "/s", 0).unwrap().size;
    disk.finish(Vec::new());
    size
}

#[test]
fn ftruncate_and_fallocate_are_durable_after_a_flush() {
    let sizes: Vec<u64> = (0..64).map(|seed| size_after_crash(seed, false)).collect();
    assert!(
        sizes.iter().all(|size| [100, 1000, 8192].contains(size)),
        "{sizes:?}"
    );
    assert!(sizes.contains(&8192) && sizes.contains(&1000), "{sizes:?}");
    for seed in 0..64 {
        assert_eq!(size_after_crash(seed, true), 1000, "seed {seed}");
    }
}

/// One seed: an 8 KiB direct write over 8 KiB of old bytes, torn for sure by the crash;
/// for each 512-byte sector, whether it holds old bytes, new bytes, or a mix.
fn torn_direct_write(seed: u64) -> Vec<(bool, bool)> {
    let mut faults = Faults::NONE;
    faults.torn_write = 1_000_000;
    let mut disk = Disk::check(seed, faults, 1 << 30);
    let direct = libc::O_CREAT | libc::O_RDWR | O_DIRECT;
    let file = disk.open("/direct", direct).unwrap();
    disk.sync_dir("/");
    assert_eq!(disk.write_aligned(&file, 0, &[0xaa; 8192]), Ok(8192));
    disk.fsync(&file).unwrap();
    if O_DIRECT != 0 {
        assert_eq!(
            disk.write_aligned(&file, 100, &[0xbb; 512]),
            Err(libc::EINVAL)
        );
        assert_eq!(
            disk.write_aligned(&file, 0, &[0xbb; 100]),
            Err(libc::EINVAL)
        );
    }
    assert_eq!(disk.write_aligned(&file, 0, &[0xbb; 8192]), Ok(8192));
    disk.crash(vec![file]);
    let image = disk.sim.file_contents("/direct").unwrap();
    assert_eq!(image.len(), 8192);
    assert_eq!(disk.sim.stats().faults.torn_write, 1);
    disk.finish(Vec::new());
    image
        .chunks(512)
        .map(|sector| (sector.contains(&0xaa), sector.contains(&0xbb)))
        .collect()
}

#[test]
fn a_torn_direct_write_keeps_whole_sectors_or_is_cut_anywhere() {
    let seeds: Vec<Vec<(bool, bool)>> = (0..64).map(torn_direct_write).collect();
    let mixed = |sectors: &Vec<(bool, bool)>| sectors.iter().any(|&(old, new)| old && new);
    let is_new = |sector: &(bool, bool)| *sector == (false, true);
    let all_new = |sectors: &Vec<(bool, bool)>| sectors.iter().all(is_new);
    assert!(
        seeds.iter().all(|sectors| !all_new(sectors)),
        "a torn write is never whole"
    );
    assert!(seeds.iter().any(mixed), "some tear inside a sector");
    let sector_grained = |sectors: &Vec<(bool, bool)>| !mixed(sectors);
    let out_of_order = |sectors: &Vec<(bool, bool)>| {
        let first_old = sectors.iter().position(|s| !is_new(s));
        first_old.is_some_and(|at| sectors[at..].iter().any(is_new))
    };
    assert!(seeds.iter().any(sector_grained), "some keep whole sectors");
    assert!(
        seeds.iter().any(out_of_order),
        "some keep sectors out of order"
    );
}

#[test]
fn eio_fails_reads_writes_and_fsyncs_and_a_failed_fsync_may_lose_the_data() {
    let mut faults = Faults::NONE;
    faults.disk_eio = 1_000_000;
    let mut disk = Disk::check(5, faults, 1 << 30);
    let file = disk.open("/e", CREATE).unwrap();
    assert_eq!(disk.write(&file, 0, b"x"), Err(libc::EIO));
    assert_eq!(disk.read(&file, 0, 1), Err(libc::EIO));
    assert_eq!(disk.fsync(&file), Err(libc::EIO));
    assert!(disk.sim.stats().faults.disk_eio >= 3);
    disk.finish(vec![file]);
    // Linux's fsync after a writeback error: the data is still read back, but the failed
    // fsync may have lost it, and the next fsync succeeds without writing it again.
    let mut lost = 0;
    for seed in 0..200 {
        let mut faults = Faults::NONE;
        faults.disk_eio = 300_000;
        let mut disk = Disk::check(seed, faults, 1 << 30);
        let file = disk.open("/e", CREATE).unwrap();
        disk.sync_dir("/");
        let pattern = (
            disk.write(&file, 0, b"data"),
            disk.fsync(&file),
            disk.fsync(&file),
        );
        if pattern == (Ok(4), Err(libc::EIO), Ok(())) {
            assert_eq!(disk.read(&file, 0, 4).unwrap_or(b"data".to_vec()), b"data");
            disk.crash(vec![file]);
            lost += u32::from(disk.sim.file_contents("/e").unwrap().is_empty());
            disk.finish(Vec::new());
        } else {
            disk.finish(vec![file]);
        }
    }
    assert!(
        lost > 0,
        "a failed fsync sometimes loses what it was to flush"
    );
}

#[test]
fn enospc_past_the_capacity_but_never_in_reserved_space() {
    let mut disk = Disk::check(6, Faults::NONE, 64 * 1024);
    let reserved = disk.open("/reserved", CREATE).unwrap();
    assert_eq!(disk.fallocate(&reserved, 0, 0, 32 * 1024), Ok(()));
    let other = disk.open("/other", CREATE).unwrap();
    // 32 KiB are left: a 48 KiB write is short, the next one fails.
    assert_eq!(disk.write(&other, 0, &[1; 48 * 1024]), Ok(32 * 1024));
    assert_eq!(disk.write(&other, 32 * 1024, &[1; 10]), Err(libc::ENOSPC));
    assert_eq!(disk.fallocate(&other, 0, 0, 40 * 1024), Err(libc::ENOSPC));
    // The reserved file's space never fails.
    assert_eq!(disk.write(&reserved, 0, &[2; 32 * 1024]), Ok(32 * 1024));
    assert_eq!(disk.write(&reserved, 32 * 1024, &[2; 1]), Err(libc::ENOSPC));
    assert!(disk.sim.stats().disk_full >= 3);
    // Space comes back when a file is removed and closed.
    disk.unlink("/other", 0).unwrap();
    disk.close(other);
    assert_eq!(disk.write(&reserved, 32 * 1024, &[2; 4096]), Ok(4096));
    disk.finish(vec![reserved]);
}

#[test]
fn one_seed_gives_one_disk_trace() {
    let run = |seed| {
        let mut faults = Faults::standard();
        faults.torn_write = 500_000;
        let mut disk = Disk::check(seed, faults, 1 << 30);
        let file = disk.open("/t", CREATE).unwrap();
        for at in 0..20 {
            let _ = disk.write(&file, at * 100, &[at as u8; 100]);
            let _ = disk.fdatasync(&file);
        }
        disk.crash(vec![file]);
        let hash = (disk.sim.trace_hash(), disk.sim.file_contents("/t"));
        disk.finish(Vec::new());
        hash
    };
    assert_eq!(run(11), run(11));
    assert_ne!(run(11).0, run(12).0);
}

#[test]
fn names_relative_to_a_directory_descriptor() {
    let mut disk = Disk::new(7);
    disk.mkdir("/base").unwrap();
    let base = disk.open("/base", DIRECTORY).unwrap();
    let dir = base.as_raw_fd();
    disk.io()
        .mkdirat(0, dir, c("sub"), 0o700, Disk::on_unit)
        .unwrap();
    assert_eq!(disk.unit(), Ok(()));
    let file = disk.open_at(&base, "sub/f", CREATE).unwrap();
    let (old, new) = (c("sub/f"), c("g"));
    disk.io()
        .renameat(0, dir, old, dir, new, 0, Disk::on_unit)
        .unwrap();
    assert_eq!(disk.unit(), Ok(()));
    assert!(disk.sim.file_contents("/base/g").is_some());
    assert_eq!(disk.statx(dir, "g", 0).map(|stat| stat.is_file()), Ok(true));
    assert_eq!(disk.statx(dir, "../base/g", 0).map(|stat| stat.size), Ok(0));
    disk.io()
        .unlinkat(0, dir, c("g"), 0, Disk::on_unit)
        .unwrap();
    assert_eq!(disk.unit(), Ok(()));
    disk.io()
        .unlinkat(0, dir, c("sub"), libc::AT_REMOVEDIR, Disk::on_unit)
        .unwrap();
    assert_eq!(disk.unit(), Ok(()));
    // A file descriptor is not a directory; a closed one is no descriptor at all.
    disk.io()
        .mkdirat(0, file.as_raw_fd(), c("x"), 0o700, Disk::on_unit)
        .unwrap();
    assert_eq!(disk.unit(), Err(libc::ENOTDIR));
    disk.finish(vec![base, file]);
}

#[test]
fn vectored_reads_refuse_unknown_flags_and_direct_reads_check_alignment() {
    let mut disk = Disk::new(8);
    let file = disk.open("/r", CREATE | O_DIRECT).unwrap();
    assert_eq!(disk.write_aligned(&file, 0, &[3; 4096]), Ok(4096));
    let on_read = |got: &mut Vec<Answer>, _: &mut Io<_>, _, (n, bufs)| {
        got.push(errno(n).map(|n| Value::Vectored(n, bufs)));
    };
    let bufs = vec![Vec::with_capacity(512)];
    disk.io()
        .read_vectored(0, file.as_raw_fd(), bufs, 0, 8, on_read)
        .unwrap();
    assert!(matches!(disk.run(), Err(libc::EOPNOTSUPP)));
    // 100 bytes of spare capacity: not a multiple of the sector.
    let bufs = vec![Vec::with_capacity(100)];
    disk.io()
        .read_vectored(0, file.as_raw_fd(), bufs, 0, 0, on_read)
        .unwrap();
    let answer = disk.run();
    assert!(O_DIRECT == 0 || matches!(answer, Err(libc::EINVAL)));
    let on_aligned = |got: &mut Vec<Answer>, _: &mut Io<_>, _, (n, buf): (_, AlignedBuf)| {
        got.push(errno(n).map(|_| Value::Count(buf.len(), buf.to_vec())));
    };
    let buf = AlignedBuf::new(4096, 4096).unwrap();
    disk.io()
        .read(0, file.as_raw_fd(), buf, 0, on_aligned)
        .unwrap();
    let Ok(Value::Count(4096, bytes)) = disk.run() else {
        panic!("an aligned direct read");
    };
    assert_eq!(bytes, [3; 4096]);
    disk.finish(vec![file]);
}

/// One seed: an fsynced file reopened with `O_TRUNC`, crashed with or without a flush of
/// the truncation; the size that survived.
fn truncated_then_crash(seed: u64, sync: bool) -> u64 {
    let mut disk = Disk::new(seed);
    let file = disk.open("/t", CREATE).unwrap();
    disk.sync_dir("/");
    disk.write(&file, 0, &[1; 8192]).unwrap();
    disk.fsync(&file).unwrap();
    let again = disk.open("/t", libc::O_RDWR | libc::O_TRUNC).unwrap();
    assert_eq!(disk.statx(AT_FDCWD, "/t", 0).unwrap().size, 0);
    if sync {
        disk.fsync(&again).unwrap();
    }
    disk.crash(vec![file, again]);
    let size = disk.statx(AT_FDCWD, "/t", 0).unwrap().size;
    disk.finish(Vec::new());
    size
}

#[test]
fn o_trunc_is_durable_after_a_flush_like_ftruncate() {
    let sizes: Vec<u64> = (0..32)
        .map(|seed| truncated_then_crash(seed, false))
        .collect();
    assert!(sizes.contains(&0) && sizes.contains(&8192), "{sizes:?}");
    assert!((0..32).all(|seed| truncated_then_crash(seed, true) == 0));
}

/// One seed: space reserved past the end of the file (`FALLOC_FL_KEEP_SIZE`), flushed by
/// `fdatasync` or `fsync`, then a crash; the blocks that survived.
fn reserved_after_crash(seed: u64, fsync: bool) -> u64 {
    let mut disk = Disk::new(seed);
    let file = disk.open("/k", CREATE).unwrap();
    disk.sync_dir("/");
    disk.write(&file, 0, &[1; 4096]).unwrap();
    disk.fallocate(&file, FALLOC_FL_KEEP_SIZE, 0, 1 << 16)
        .unwrap();
    if fsync {
        disk.fsync(&file).unwrap();
    } else {
        disk.fdatasync(&file).unwrap();
    }
    disk.crash(vec![file]);
    let stat = disk.statx(AT_FDCWD, "/k", 0).unwrap();
    assert_eq!(stat.size, 4096, "the data and size survive either flush");
    disk.finish(Vec::new());
    stat.blocks
}

#[test]
fn fdatasync_leaves_a_reservation_past_the_end_to_fsync() {
    let blocks: Vec<u64> = (0..32)
        .map(|seed| reserved_after_crash(seed, false))
        .collect();
    assert!(blocks.contains(&8) && blocks.contains(&128), "{blocks:?}");
    assert!((0..32).all(|seed| reserved_after_crash(seed, true) == 128));
}

#[test]
fn offset_u64_max_reads_and_writes_at_the_position_and_pread_leaves_it() {
    let mut disk = Disk::new(9);
    let file = disk.open("/p", CREATE).unwrap();
    assert_eq!(disk.write(&file, u64::MAX, b"abc"), Ok(3));
    assert_eq!(
        disk.write(&file, 100, b"far"),
        Ok(3),
        "pwrite: the position stays"
    );
    assert_eq!(disk.write(&file, u64::MAX, b"def"), Ok(3));
    assert_eq!(disk.read(&file, 0, 6).unwrap(), b"abcdef");
    let reader = disk.open("/p", libc::O_RDONLY).unwrap();
    assert_eq!(disk.read(&reader, u64::MAX, 2).unwrap(), b"ab");
    assert_eq!(
        disk.read(&reader, 4, 2).unwrap(),
        b"ef",
        "pread: the position stays"
    );
    assert_eq!(disk.read(&reader, u64::MAX, 2).unwrap(), b"cd");
    disk.finish(vec![file, reader]);
}

#[test]
fn o_append_writes_at_the_end_whatever_the_offset() {
    let mut disk = Disk::new(10);
    let file = disk.open("/a", CREATE).unwrap();
    disk.write(&file, 0, b"first").unwrap();
    let append = disk.open("/a", libc::O_WRONLY | libc::O_APPEND).unwrap();
    assert_eq!(disk.write(&append, 0, b"+more"), Ok(5));
    assert_eq!(disk.write(&append, u64::MAX, b"!"), Ok(1));
    assert_eq!(disk.read(&file, 0, 64).unwrap(), b"first+more!");
    disk.finish(vec![file, append]);
}
