//! The file operations a storage engine takes, on every backend (io_uring with its file
//! opcodes and with them masked, so each runs in the loop's thread; epoll; kqueue over the
//! kevent double; the simulator's disk): each one's result, its error cases, and an
//! `O_DIRECT` round trip with aligned buffers in a directory on a disk-backed file system.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use dispatch_loop::{AlignedBuf, FileStat, Io, Options, Tag, AT_FDCWD, RENAME_NOREPLACE};

use super::alike::{all_alike, backends, On};

/// What the last operation's callback got.
#[derive(Default)]
struct Got {
    unit: Option<io::Result<()>>,
    fd: Option<io::Result<OwnedFd>>,
    stat: Option<io::Result<FileStat>>,
    count: Option<io::Result<usize>>,
    buf: Option<AlignedBuf>,
    bufs: Option<Vec<AlignedBuf>>,
    vec: Option<Vec<u8>>,
}

fn on_unit(got: &mut Got, _: &mut Io<Got>, _: Tag, result: io::Result<()>) {
    got.unit = Some(result);
}

fn on_fd(got: &mut Got, _: &mut Io<Got>, _: Tag, result: io::Result<OwnedFd>) {
    got.fd = Some(result);
}

fn on_stat(got: &mut Got, _: &mut Io<Got>, _: Tag, result: io::Result<FileStat>) {
    got.stat = Some(result);
}

fn on_aligned(got: &mut Got, _: &mut Io<Got>, _: Tag, (n, buf): (io::Result<usize>, AlignedBuf)) {
    got.count = Some(n);
    got.buf = Some(buf);
}

fn on_list(
    got: &mut Got,
    _: &mut Io<Got>,
    _: Tag,
    (n, bufs): (io::Result<usize>, Vec<AlignedBuf>),
) {
    got.count = Some(n);
    got.bufs = Some(bufs);
}

fn on_vec(got: &mut Got, _: &mut Io<Got>, _: Tag, (n, buf): (io::Result<usize>, Vec<u8>)) {
    got.count = Some(n);
    got.vec = Some(buf);
}

/// The errno of a result, 0 for success.
fn errno<T>(result: &io::Result<T>) -> i32 {
    result
        .as_ref()
        .map_or_else(|error| error.raw_os_error().expect("an OS error"), |_| 0)
}

fn c(path: &str) -> CString {
    CString::new(path).expect("no NUL in a test path")
}

/// Runs the loop until the operation scheduled completes, and returns what it got.
fn run(io: &mut Io<Got>) -> Got {
    let mut got = Got::default();
    io.run_until_idle(&mut got).expect("run");
    assert_eq!(io.in_flight(), 0);
    got
}

/// A directory for this test on a disk-backed file system: cargo's per-target scratch
/// directory (not `/tmp`, which may be memory), unique to the process and the test.
fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("files-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    dir
}

/// The directory the script works in, as a path the backend knows: a real directory, or
/// one on the simulator's disk.
fn base(on: On, name: &str) -> String {
    match on {
        On::Sim => format!("/{name}"),
        _ => scratch(name).to_str().expect("a UTF-8 path").to_owned(),
    }
}

/// Every metadata step of a log's life, on one backend: what each answered.
fn metadata_script(io: &mut Io<Got>, dir: &str) -> Vec<(&'static str, i32, u64)> {
    let mut seen = Vec::new();
    let sub = format!("{dir}/sub");
    io.mkdirat(0, AT_FDCWD, c(&sub), 0o755, on_unit).unwrap();
    seen.push(("mkdirat", errno(&run(io).unit.unwrap()), 0));
    io.mkdirat(0, AT_FDCWD, c(&sub), 0o755, on_unit).unwrap();
    seen.push(("mkdirat again", errno(&run(io).unit.unwrap()), 0));
    let flags = libc::O_RDONLY | libc::O_DIRECTORY;
    io.openat(0, AT_FDCWD, c(&sub), flags, 0, on_fd).unwrap();
    let sub_fd = run(io).fd.unwrap().expect("open the directory");
    let flags = libc::O_CREAT | libc::O_RDWR | libc::O_EXCL;
    // Relative to the directory's descriptor.
    io.openat(0, sub_fd.as_raw_fd(), c("log"), flags, 0o644, on_fd)
        .unwrap();
    let file = run(io).fd.unwrap().expect("create the log");
    let fd = file.as_raw_fd();
    io.fallocate(0, fd, 0, 0, 65536, on_unit).unwrap();
    seen.push(("fallocate", errno(&run(io).unit.unwrap()), 0));
    seen.push(stat_size(io, fd, "statx after fallocate"));
    io.ftruncate(0, fd, 10, on_unit).unwrap();
    seen.push(("ftruncate", errno(&run(io).unit.unwrap()), 0));
    seen.push(stat_size(io, fd, "statx after ftruncate"));
    io.fsync(0, sub_fd.as_raw_fd(), on_unit).unwrap();
    seen.push(("fsync the directory", errno(&run(io).unit.unwrap()), 0));
    let (log, renamed) = (format!("{sub}/log"), format!("{sub}/renamed"));
    io.renameat(0, AT_FDCWD, c(&log), AT_FDCWD, c(&renamed), 0, on_unit)
        .unwrap();
    seen.push(("renameat", errno(&run(io).unit.unwrap()), 0));
    io.openat(
        0,
        AT_FDCWD,
        c(&log),
        libc::O_CREAT | libc::O_RDWR,
        0o644,
        on_fd,
    )
    .unwrap();
    drop(run(io).fd.unwrap().expect("create another log"));
    io.renameat(
        0,
        AT_FDCWD,
        c(&log),
        AT_FDCWD,
        c(&renamed),
        RENAME_NOREPLACE,
        on_unit,
    )
    .unwrap();
    seen.push(("renameat noreplace", errno(&run(io).unit.unwrap()), 0));
    io.unlinkat(0, sub_fd.as_raw_fd(), c("log"), 0, on_unit)
        .unwrap();
    seen.push(("unlinkat", errno(&run(io).unit.unwrap()), 0));
    io.unlinkat(0, AT_FDCWD, c(&sub), libc::AT_REMOVEDIR, on_unit)
        .unwrap();
    seen.push((
        "unlinkat a full directory",
        errno(&run(io).unit.unwrap()),
        0,
    ));
    io.unlinkat(0, AT_FDCWD, c(&renamed), 0, on_unit).unwrap();
    seen.push(("unlinkat renamed", errno(&run(io).unit.unwrap()), 0));
    io.unlinkat(0, AT_FDCWD, c(&sub), libc::AT_REMOVEDIR, on_unit)
        .unwrap();
    seen.push(("unlinkat the directory", errno(&run(io).unit.unwrap()), 0));
    io.statx(0, AT_FDCWD, c(&renamed), 0, on_stat).unwrap();
    seen.push(("statx a removed file", errno(&run(io).stat.unwrap()), 0));
    seen
}

/// The size statx reports for the open file `fd` (through its descriptor).
fn stat_size(io: &mut Io<Got>, fd: RawFd, step: &'static str) -> (&'static str, i32, u64) {
    io.statx(0, fd, c(""), libc::AT_EMPTY_PATH, on_stat)
        .unwrap();
    match run(io).stat.unwrap() {
        Ok(stat) => {
            assert!(stat.is_file(), "{step}: {stat:?}");
            (step, 0, stat.size)
        }
        Err(error) => (step, error.raw_os_error().unwrap(), 0),
    }
}

#[test]
fn metadata_operations_answer_alike_on_every_backend() {
    let mut seen = Vec::new();
    for on in backends().into_iter().filter(|&on| on != On::Sim) {
        let Some(mut rig) = on.rig::<Got>(&Options::new(8)) else {
            continue;
        };
        let dir = base(on, "metadata");
        if on == On::Sim {
            rig.io
                .mkdirat(0, AT_FDCWD, c(&dir), 0o755, on_unit)
                .unwrap();
            run(&mut rig.io)
                .unit
                .unwrap()
                .expect("a directory on the simulated disk");
        }
        seen.push((on, metadata_script(&mut rig.io, &dir)));
        if let On::Uring { masked } = on {
            // Masked, every optional file opcode ran in the loop's thread.
            let used = rig
                .io
                .stats()
                .uring
                .expect("io_uring's features")
                .file_opcodes;
            assert_eq!(used == 0, masked, "{on:?}: {used} file opcodes");
        }
    }
    let expected = [
        ("mkdirat", 0, 0),
        ("mkdirat again", libc::EEXIST, 0),
        ("fallocate", 0, 0),
        ("statx after fallocate", 0, 65536),
        ("ftruncate", 0, 0),
        ("statx after ftruncate", 0, 10),
        ("fsync the directory", 0, 0),
        ("renameat", 0, 0),
        ("renameat noreplace", libc::EEXIST, 0),
        ("unlinkat", 0, 0),
        ("unlinkat a full directory", libc::ENOTEMPTY, 0),
        ("unlinkat renamed", 0, 0),
        ("unlinkat the directory", 0, 0),
        ("statx a removed file", libc::ENOENT, 0),
    ];
    assert_eq!(seen[0].1, expected, "{:?}", seen[0].0);
    all_alike(&seen);
}

/// Opens `path` for direct I/O, or `None` where the file system refuses `O_DIRECT`.
fn open_direct(io: &mut Io<Got>, path: &str) -> Option<OwnedFd> {
    let flags = libc::O_CREAT | libc::O_RDWR | libc::O_TRUNC | libc::O_DIRECT;
    io.openat(0, AT_FDCWD, c(path), flags, 0o644, on_fd)
        .unwrap();
    match run(io).fd.unwrap() {
        Ok(fd) => Some(fd),
        Err(error) if error.raw_os_error() == Some(libc::EINVAL) => None,
        Err(error) => panic!("open {path} O_DIRECT: {error}"),
    }
}

/// An aligned buffer of `blocks` 4 KiB blocks, block `i` filled with `seed + i`.
fn blocks(blocks: usize, seed: u8) -> AlignedBuf {
    let mut buf = AlignedBuf::new(blocks * 4096, 4096).unwrap();
    for i in 0..blocks {
        buf.extend_from_slice(&[seed.wrapping_add(i as u8); 4096]);
    }
    buf
}

/// A direct-I/O round trip and its misuse, on one backend: what each step answered.
fn direct_script(io: &mut Io<Got>, fd: RawFd) -> Vec<(&'static str, i32, usize)> {
    let mut seen = Vec::new();
    io.write(0, fd, blocks(2, 1), 4096, on_aligned).unwrap();
    let got = run(io);
    seen.push((
        "write",
        errno(got.count.as_ref().unwrap()),
        got.count.unwrap().unwrap_or(0),
    ));
    let list = vec![blocks(1, 10), blocks(1, 20)];
    io.write_vectored(0, fd, list, 3 * 4096, libc::RWF_DSYNC, on_list)
        .unwrap();
    let got = run(io);
    seen.push((
        "write_vectored dsync",
        0,
        got.count.unwrap().expect("write_vectored"),
    ));
    io.fdatasync(0, fd, on_unit).unwrap();
    seen.push(("fdatasync", errno(&run(io).unit.unwrap()), 0));
    let buf = AlignedBuf::new(5 * 4096, 4096).unwrap();
    io.read(0, fd, buf, 0, on_aligned).unwrap();
    let got = run(io);
    let buf = got.buf.unwrap();
    seen.push(("read", 0, got.count.unwrap().expect("read")));
    assert_eq!(
        &buf[..4096],
        &[0; 4096][..],
        "the hole before the first write reads zeros"
    );
    assert_eq!(&buf[4096..8192], &[1; 4096][..]);
    assert_eq!(&buf[8192..12288], &[2; 4096][..]);
    assert_eq!(&buf[3 * 4096..4 * 4096], &[10; 4096][..]);
    assert_eq!(&buf[4 * 4096..], &[20; 4096][..]);
    let list = vec![
        AlignedBuf::new(4096, 4096).unwrap(),
        AlignedBuf::new(8192, 4096).unwrap(),
    ];
    io.read_vectored(0, fd, list, 2 * 4096, 0, on_list).unwrap();
    let got = run(io);
    let bufs = got.bufs.unwrap();
    seen.push((
        "read_vectored",
        0,
        got.count.unwrap().expect("read_vectored"),
    ));
    assert_eq!((bufs[0].len(), bufs[1].len()), (4096, 8192));
    assert_eq!((bufs[0][0], bufs[1][0], bufs[1][4096]), (2, 10, 20));
    // Misuse the kernel refuses: an offset, a buffer address that are not block multiples.
    io.read(0, fd, AlignedBuf::new(4096, 4096).unwrap(), 100, on_aligned)
        .unwrap();
    seen.push(("read at offset 100", errno(&run(io).count.unwrap()), 0));
    let mut shifted = AlignedBuf::new(8192, 4096).unwrap();
    shifted.resize(1, 0); // the read lands at address + 1
    io.read(0, fd, shifted, 0, on_aligned).unwrap();
    seen.push((
        "read into a misaligned address",
        errno(&run(io).count.unwrap()),
        0,
    ));
    seen
}

#[test]
fn direct_io_round_trips_with_aligned_buffers_on_every_real_backend() {
    let mut seen = Vec::new();
    for on in backends().into_iter().filter(|&on| on != On::Sim) {
        let Some(mut rig) = on.rig::<Got>(&Options::new(8)) else {
            continue;
        };
        let dir = scratch("direct");
        let path = dir.join("data");
        let Some(fd) = open_direct(&mut rig.io, path.to_str().unwrap()) else {
            let fs = std::process::Command::new("stat")
                .args(["-f", "-c", "%T"])
                .arg(&dir)
                .output()
                .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned());
            // Ext4, XFS and Btrfs take O_DIRECT: refusing it there is a failure.
            let fs = fs.unwrap_or_default();
            assert!(
                !matches!(fs.as_str(), "ext2/ext3" | "xfs" | "btrfs"),
                "{fs} refused it"
            );
            eprintln!("skipped: {on:?}: no O_DIRECT on {} ({fs})", dir.display());
            return;
        };
        seen.push((on, direct_script(&mut rig.io, fd.as_raw_fd())));
        drop(fd);
        std::fs::remove_dir_all(&dir).unwrap();
    }
    let expected = [
        ("write", 0, 8192),
        ("write_vectored dsync", 0, 8192),
        ("fdatasync", 0, 0),
        ("read", 0, 5 * 4096),
        ("read_vectored", 0, 3 * 4096),
    ];
    assert_eq!(seen[0].1[..5], expected, "{:?}", seen[0].0);
    // Misaligned requests go to the kernel as they are, and the file system answers: ext4
    // here refuses them (EINVAL), tmpfs (Linux 6.6 and later, the kernel matrix's VMs)
    // serves them. Either way every backend answers alike.
    for &(step, errno, _) in &seen[0].1[5..] {
        assert!(matches!(errno, 0 | libc::EINVAL), "{step}: errno {errno}");
    }
    all_alike(&seen);
}

#[test]
fn file_operations_on_bad_descriptors_and_paths_fail_with_their_errno() {
    for on in backends().into_iter().filter(|&on| on != On::Sim) {
        let Some(mut rig) = on.rig::<Got>(&Options::new(8)) else {
            continue;
        };
        let io = &mut rig.io;
        let mut seen = Vec::new();
        io.fdatasync(0, -1, on_unit).unwrap();
        seen.push(errno(&run(io).unit.unwrap()));
        io.ftruncate(0, -1, 0, on_unit).unwrap();
        seen.push(errno(&run(io).unit.unwrap()));
        io.fallocate(0, -1, 0, 0, 4096, on_unit).unwrap();
        seen.push(errno(&run(io).unit.unwrap()));
        io.write_vectored(
            0,
            -1,
            vec![b"x".to_vec()],
            0,
            0,
            |got: &mut Got, _, _, (n, _)| {
                got.count = Some(n);
            },
        )
        .unwrap();
        seen.push(errno(&run(io).count.unwrap()));
        io.read(0, -1, Vec::with_capacity(8), 0, on_vec).unwrap();
        let got = run(io);
        assert_eq!(
            got.vec.unwrap().capacity(),
            8,
            "{on:?}: the buffer comes back"
        );
        seen.push(errno(&got.count.unwrap()));
        io.statx(0, AT_FDCWD, c("/nonexistent/dispatch-loop"), 0, on_stat)
            .unwrap();
        seen.push(errno(&run(io).stat.unwrap()));
        io.mkdirat(
            0,
            AT_FDCWD,
            c("/nonexistent/dispatch-loop/dir"),
            0o755,
            on_unit,
        )
        .unwrap();
        seen.push(errno(&run(io).unit.unwrap()));
        io.unlinkat(0, AT_FDCWD, c("/nonexistent/dispatch-loop"), 0, on_unit)
            .unwrap();
        seen.push(errno(&run(io).unit.unwrap()));
        let (ebadf, enoent) = (libc::EBADF, libc::ENOENT);
        assert_eq!(
            seen,
            [ebadf, ebadf, ebadf, ebadf, ebadf, enoent, enoent, enoent],
            "{on:?}"
        );
    }
}

#[test]
fn aligned_buffers_refuse_bad_layouts_and_never_grow() {
    assert_eq!(
        AlignedBuf::new(4096, 3).unwrap_err().kind(),
        io::ErrorKind::InvalidInput
    );
    assert_eq!(
        AlignedBuf::new(0, 4096).unwrap_err().kind(),
        io::ErrorKind::InvalidInput
    );
    let mut buf = AlignedBuf::zeroed(512, 512).unwrap();
    assert_eq!((buf.len(), buf.capacity(), buf.align()), (512, 512, 512));
    assert_eq!(buf.as_ptr() as usize % 512, 0);
    let grow = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| buf.resize(513, 0)));
    assert!(grow.is_err(), "a resize past the capacity panics");
    buf.truncate(10);
    assert_eq!(buf.len(), 10);
}

#[test]
fn registered_buffers_round_trip_come_back_when_dropped_and_are_plain_elsewhere() {
    let mut options = Options::new(8);
    options.registered = dispatch_loop::RegisteredOptions::new(2, 8192);
    let mut seen = Vec::new();
    for on in backends().into_iter().filter(|&on| on != On::Sim) {
        let Some(mut rig) = on.rig::<Got>(&options) else {
            continue;
        };
        let io = &mut rig.io;
        if let On::Uring { .. } = on {
            let features = io.stats().uring.expect("io_uring's features");
            assert!(features.registered_buffers, "{on:?}: the kernel took them");
        }
        let (mut a, b) = (io.registered_buf().unwrap(), io.registered_buf().unwrap());
        assert!(io.registered_buf().is_none(), "{on:?}: two buffers only");
        assert!(a.is_registered() && b.is_registered());
        assert_eq!((a.capacity(), a.as_ptr() as usize % 4096), (8192, 0));
        drop(b);
        let b = io.registered_buf().expect("the dropped buffer is back");
        let dir = scratch("registered");
        let path = dir.join("data");
        let Some(fd) = open_direct(io, path.to_str().unwrap()) else {
            eprintln!("skipped: {on:?}: no O_DIRECT in {}", dir.display());
            return;
        };
        a.resize(8192, 0x5a);
        io.write(0, fd.as_raw_fd(), a, 4096, on_aligned).unwrap();
        let got = run(io);
        let written = got.count.unwrap().expect("write from a registered buffer");
        io.read(0, fd.as_raw_fd(), b, 0, on_aligned).unwrap();
        let got = run(io);
        let read = got.count.unwrap().expect("read into a registered buffer");
        let b = got.buf.unwrap();
        assert!(b.is_registered(), "{on:?}: the same buffer comes back");
        assert_eq!(
            (&b[..4096], &b[4096..]),
            (&[0; 4096][..], &[0x5a; 4096][..])
        );
        // A registered buffer of another loop is a plain aligned buffer here.
        let mut other = Io::<Got>::new(&options).expect("another loop");
        let mut foreign = other.registered_buf().unwrap();
        foreign.resize(4096, 7);
        io.write(0, fd.as_raw_fd(), foreign, 0, on_aligned).unwrap();
        let foreign = run(io)
            .count
            .unwrap()
            .expect("write from another loop's buffer");
        seen.push((on, (written, read, foreign)));
        drop(fd);
        std::fs::remove_dir_all(&dir).unwrap();
    }
    assert_eq!(seen[0].1, (8192, 8192, 4096));
    all_alike(&seen);
}
