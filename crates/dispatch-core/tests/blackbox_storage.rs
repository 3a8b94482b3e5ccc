//! Black-box tests of dispatch-loop's storage API, written from its public documentation only
//! (the rustdoc, README.md's "A taste of storage", docs/ARCHITECTURE.md's "Buffer ownership"
//! and the io_uring life of an operation), never from the implementation.
//!
//! Every test runs on four backends whatever `DISPATCH_BACKEND` says: io_uring, io_uring with
//! `UringOptions::file_opcodes = false` (every optional file opcode performed in the loop's
//! thread), epoll and kqueue over the kevent double. A backend this machine cannot run is
//! skipped with a `skipped:` line. Each variant runs under `catch_unwind`, so a failure names
//! every variant it happened on. Files live under `CARGO_TARGET_TMPDIR` (a disk-backed file
//! system: direct I/O and `STATX_DIOALIGN` need one). Waits are bounded by a generous
//! wall-clock limit that only a hung operation reaches; nothing is timed.

use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use dispatch_loop::{
    AlignedBuf, BackendKind, DeadlineError, FileStat, InitError, Io, IoBuf, OpId, Options,
    RegisteredOptions, ScheduleError, ScheduleErrorKind, Tag, AT_FDCWD, GATHER_MAX,
    RENAME_NOREPLACE,
};

const MS: u64 = 1_000_000;
/// The longest a test waits for operations that should complete at once: reached only by a
/// hung operation, so that a bug fails the test instead of hanging the suite.
const HANG: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------
// Variants and scratch directories
// ---------------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Variant {
    Uring,
    UringMasked,
    Epoll,
    KqueueFake,
}

impl Variant {
    const ALL: [Variant; 4] = [
        Variant::Uring,
        Variant::UringMasked,
        Variant::Epoll,
        Variant::KqueueFake,
    ];

    fn options(self, ops_max: u32) -> Options {
        let mut o = Options::new(ops_max);
        match self {
            Variant::Uring => o.backend = Some(BackendKind::IoUring),
            Variant::UringMasked => {
                o.backend = Some(BackendKind::IoUring);
                o.uring.file_opcodes = false;
            }
            Variant::Epoll => o.backend = Some(BackendKind::Epoll),
            Variant::KqueueFake => o.backend = Some(BackendKind::KqueueFake),
        }
        o
    }

    fn kind(self) -> BackendKind {
        match self {
            Variant::Uring | Variant::UringMasked => BackendKind::IoUring,
            Variant::Epoll => BackendKind::Epoll,
            Variant::KqueueFake => BackendKind::KqueueFake,
        }
    }

    fn is_uring(self) -> bool {
        self.kind() == BackendKind::IoUring
    }

    fn available(self) -> bool {
        Io::<()>::new(&self.options(1)).is_ok()
    }
}

/// One variant of one test: the backend, and a fresh scratch directory.
struct Case {
    v: Variant,
    dir: PathBuf,
}

impl Case {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn cpath(&self, name: &str) -> CString {
        cstr(&self.path(name))
    }

    fn options(&self, ops_max: u32) -> Options {
        self.v.options(ops_max)
    }

    fn lp(&self) -> Lp {
        self.lp_with(&self.options(16))
    }

    fn lp_with(&self, o: &Options) -> Lp {
        let io: Io<Ctx> = Io::new(o).unwrap_or_else(|e| panic!("Io::new: {e}"));
        assert_eq!(io.stats().backend, self.v.kind(), "the backend asked for");
        Lp {
            io,
            ctx: Ctx::default(),
        }
    }

    /// A file named `name` holding `bytes`, opened read-write.
    fn file(&self, name: &str, bytes: &[u8]) -> File {
        let mut f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(self.path(name))
            .unwrap();
        f.write_all(bytes).unwrap();
        f
    }

    fn dir_fd(&self, name: &str) -> File {
        let p = self.path(name);
        fs::create_dir_all(&p).unwrap();
        OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY)
            .open(p)
            .unwrap()
    }
}

fn cstr(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

fn c(s: &str) -> CString {
    CString::new(s).unwrap()
}

fn scratch(test: &str, v: Variant) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("blackbox_storage")
        .join(format!("{test}-{v:?}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else {
        "a panic".into()
    }
}

/// Runs `f` on every variant, then fails naming each variant it failed on.
fn each(test: &str, f: impl Fn(&Case)) {
    each_of(test, &Variant::ALL, f)
}

fn each_of(test: &str, variants: &[Variant], f: impl Fn(&Case)) {
    let mut failures = Vec::new();
    for &v in variants {
        if !v.available() {
            eprintln!("skipped: {test} on {v:?}: the backend cannot run here");
            continue;
        }
        let case = Case {
            v,
            dir: scratch(test, v),
        };
        match catch_unwind(AssertUnwindSafe(|| f(&case))) {
            Ok(()) => {
                let _ = fs::remove_dir_all(&case.dir);
            }
            Err(p) => failures.push(format!("[{v:?}] {}", panic_message(&*p))),
        }
    }
    assert!(failures.is_empty(), "{test}:\n{}", failures.join("\n"));
}

/// Runs `f` on every variant and checks that each gives the same answer ("the same program
/// runs on every backend": where the docs name no difference, there is none).
fn alike<T: PartialEq + std::fmt::Debug>(test: &str, f: impl Fn(&Case) -> T) {
    let seen: std::cell::RefCell<Vec<(Variant, T)>> = Default::default();
    each(test, |case| {
        let got = f(case);
        seen.borrow_mut().push((case.v, got));
    });
    let seen = seen.into_inner();
    let differ = seen.windows(2).any(|w| w[0].1 != w[1].1);
    let table: Vec<String> = seen
        .iter()
        .map(|(v, t)| format!("  {v:?}: {t:?}"))
        .collect();
    assert!(
        !differ,
        "{test}: the backends differ:\n{}",
        table.join("\n")
    );
}

// ---------------------------------------------------------------------------------------
// A loop whose callbacks log what they got, and one-operation helpers
// ---------------------------------------------------------------------------------------

type Res<T> = Result<T, i32>;

fn errno<T>(r: io::Result<T>) -> Res<T> {
    r.map_err(|e| e.raw_os_error().unwrap_or(-1))
}

#[derive(Debug)]
enum Ev {
    Unit(Res<()>),
    Vec(Res<usize>, Vec<u8>),
    Aligned(Res<usize>, AlignedBuf),
    Vecs(Res<usize>, Vec<Vec<u8>>),
    Aligneds(Res<usize>, Vec<AlignedBuf>),
    Stat(Res<FileStat>),
    Fd(Res<OwnedFd>),
}

impl Ev {
    fn unit(self) -> Res<()> {
        match self {
            Ev::Unit(r) => r,
            other => panic!("expected a unit result, got {other:?}"),
        }
    }

    fn stat(self) -> Res<FileStat> {
        match self {
            Ev::Stat(r) => r,
            other => panic!("expected a statx result, got {other:?}"),
        }
    }

    fn fd(self) -> Res<OwnedFd> {
        match self {
            Ev::Fd(r) => r,
            other => panic!("expected a descriptor, got {other:?}"),
        }
    }
}

/// The two buffer kinds, as the tests log them.
trait Buf: IoBuf + Sized + std::fmt::Debug + 'static {
    fn one(r: Res<usize>, b: Self) -> Ev;
    fn many(r: Res<usize>, b: Vec<Self>) -> Ev;
    fn take_one(ev: Ev) -> (Res<usize>, Self);
    fn take_many(ev: Ev) -> (Res<usize>, Vec<Self>);
}

impl Buf for Vec<u8> {
    fn one(r: Res<usize>, b: Self) -> Ev {
        Ev::Vec(r, b)
    }
    fn many(r: Res<usize>, b: Vec<Self>) -> Ev {
        Ev::Vecs(r, b)
    }
    fn take_one(ev: Ev) -> (Res<usize>, Self) {
        match ev {
            Ev::Vec(r, b) => (r, b),
            other => panic!("expected a Vec<u8> back, got {other:?}"),
        }
    }
    fn take_many(ev: Ev) -> (Res<usize>, Vec<Self>) {
        match ev {
            Ev::Vecs(r, b) => (r, b),
            other => panic!("expected Vec<Vec<u8>> back, got {other:?}"),
        }
    }
}

impl Buf for AlignedBuf {
    fn one(r: Res<usize>, b: Self) -> Ev {
        Ev::Aligned(r, b)
    }
    fn many(r: Res<usize>, b: Vec<Self>) -> Ev {
        Ev::Aligneds(r, b)
    }
    fn take_one(ev: Ev) -> (Res<usize>, Self) {
        match ev {
            Ev::Aligned(r, b) => (r, b),
            other => panic!("expected an AlignedBuf back, got {other:?}"),
        }
    }
    fn take_many(ev: Ev) -> (Res<usize>, Vec<Self>) {
        match ev {
            Ev::Aligneds(r, b) => (r, b),
            other => panic!("expected Vec<AlignedBuf> back, got {other:?}"),
        }
    }
}

#[derive(Default, Debug)]
struct Ctx {
    ev: Vec<(Tag, Ev)>,
}

fn on_file<B: Buf>(c: &mut Ctx, _: &mut Io<Ctx>, t: Tag, (r, b): (io::Result<usize>, B)) {
    c.ev.push((t, B::one(errno(r), b)));
}

fn on_files<B: Buf>(c: &mut Ctx, _: &mut Io<Ctx>, t: Tag, (r, b): (io::Result<usize>, Vec<B>)) {
    c.ev.push((t, B::many(errno(r), b)));
}

fn on_unit(c: &mut Ctx, _: &mut Io<Ctx>, t: Tag, r: io::Result<()>) {
    c.ev.push((t, Ev::Unit(errno(r))));
}

fn on_stat(c: &mut Ctx, _: &mut Io<Ctx>, t: Tag, r: io::Result<FileStat>) {
    c.ev.push((t, Ev::Stat(errno(r))));
}

fn on_fd(c: &mut Ctx, _: &mut Io<Ctx>, t: Tag, r: io::Result<OwnedFd>) {
    c.ev.push((t, Ev::Fd(errno(r))));
}

/// A loop and its context.
struct Lp {
    io: Io<Ctx>,
    ctx: Ctx,
}

impl Lp {
    /// Runs the loop until nothing is in flight (bounded by `HANG`).
    fn settle(&mut self) {
        let start = Instant::now();
        self.io.tick(&mut self.ctx).expect("tick");
        while self.io.in_flight() > 0 {
            assert!(
                start.elapsed() < HANG,
                "operations never completed: {:?}",
                self.ctx
            );
            self.io.run_for_ns(&mut self.ctx, MS).expect("run");
        }
    }

    /// The one callback of the tag `tag` (which must have run).
    fn take(&mut self, tag: Tag) -> Ev {
        let i = self.ctx.ev.iter().position(|(t, _)| *t == tag);
        let i = i.unwrap_or_else(|| panic!("no callback for tag {tag}: {:?}", self.ctx));
        let (_, ev) = self.ctx.ev.remove(i);
        assert!(
            self.ctx.ev.iter().all(|(t, _)| *t != tag),
            "tag {tag} called back twice"
        );
        ev
    }

    /// Settles, and returns the one callback of the tag `tag`.
    fn done(&mut self, tag: Tag) -> Ev {
        self.settle();
        self.take(tag)
    }

    fn read<B: Buf>(&mut self, fd: RawFd, buf: B, off: u64) -> (Res<usize>, B) {
        self.io
            .read(7, fd, buf, off, on_file::<B>)
            .expect("a free slot");
        B::take_one(self.done(7))
    }

    fn write<B: Buf>(&mut self, fd: RawFd, buf: B, off: u64) -> (Res<usize>, B) {
        self.io
            .write(7, fd, buf, off, on_file::<B>)
            .expect("a free slot");
        B::take_one(self.done(7))
    }

    fn readv<B: Buf>(&mut self, fd: RawFd, b: Vec<B>, off: u64, fl: i32) -> (Res<usize>, Vec<B>) {
        let cb = on_files::<B>;
        self.io
            .read_vectored(7, fd, b, off, fl, cb)
            .expect("a free slot");
        B::take_many(self.done(7))
    }

    fn writev<B: Buf>(&mut self, fd: RawFd, b: Vec<B>, off: u64, fl: i32) -> (Res<usize>, Vec<B>) {
        let cb = on_files::<B>;
        self.io
            .write_vectored(7, fd, b, off, fl, cb)
            .expect("a free slot");
        B::take_many(self.done(7))
    }

    fn fsync(&mut self, fd: RawFd) -> Res<()> {
        self.io.fsync(7, fd, on_unit).expect("a free slot");
        self.done(7).unit()
    }

    fn fdatasync(&mut self, fd: RawFd) -> Res<()> {
        self.io.fdatasync(7, fd, on_unit).expect("a free slot");
        self.done(7).unit()
    }

    fn fallocate(&mut self, fd: RawFd, mode: i32, off: u64, len: u64) -> Res<()> {
        self.io
            .fallocate(7, fd, mode, off, len, on_unit)
            .expect("a free slot");
        self.done(7).unit()
    }

    fn ftruncate(&mut self, fd: RawFd, len: u64) -> Res<()> {
        self.io.ftruncate(7, fd, len, on_unit).expect("a free slot");
        self.done(7).unit()
    }

    fn statx(&mut self, dir: RawFd, path: CString, flags: i32) -> Res<FileStat> {
        self.io
            .statx(7, dir, path, flags, on_stat)
            .expect("a free slot");
        self.done(7).stat()
    }

    fn openat(&mut self, dir: RawFd, path: CString, flags: i32, mode: u32) -> Res<OwnedFd> {
        self.io
            .openat(7, dir, path, flags, mode, on_fd)
            .expect("a free slot");
        self.done(7).fd()
    }

    fn renameat(&mut self, od: RawFd, op: CString, nd: RawFd, np: CString, fl: u32) -> Res<()> {
        self.io
            .renameat(7, od, op, nd, np, fl, on_unit)
            .expect("a free slot");
        self.done(7).unit()
    }

    fn unlinkat(&mut self, dir: RawFd, path: CString, flags: i32) -> Res<()> {
        self.io
            .unlinkat(7, dir, path, flags, on_unit)
            .expect("a free slot");
        self.done(7).unit()
    }

    fn mkdirat(&mut self, dir: RawFd, path: CString, mode: u32) -> Res<()> {
        self.io
            .mkdirat(7, dir, path, mode, on_unit)
            .expect("a free slot");
        self.done(7).unit()
    }
}

fn contents(p: &Path) -> Vec<u8> {
    fs::read(p).unwrap()
}

fn position(f: &File) -> u64 {
    let mut f = f;
    f.stream_position().unwrap()
}

fn vec_with(bytes: &[u8], capacity: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(capacity);
    v.extend_from_slice(bytes);
    v
}

fn is_cloexec(fd: &OwnedFd) -> bool {
    rustix::io::fcntl_getfd(fd)
        .unwrap()
        .contains(rustix::io::FdFlags::CLOEXEC)
}

/// An `O_DIRECT` file of `len` zero bytes, or `None` (with a `skipped:` line) where the file
/// system refuses `O_DIRECT`.
fn direct_file(case: &Case, name: &str, len: u64) -> Option<File> {
    case.file(name, &[]).set_len(len).unwrap();
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(case.path(name));
    match f {
        Ok(f) => Some(f),
        Err(e) => {
            eprintln!("skipped: O_DIRECT refused here: {e}");
            None
        }
    }
}

// ---------------------------------------------------------------------------------------
// AlignedBuf
// ---------------------------------------------------------------------------------------

fn invalid_input(r: io::Result<AlignedBuf>) -> bool {
    matches!(r, Err(e) if e.kind() == io::ErrorKind::InvalidInput)
}

/// AlignedBuf::new: "InvalidInput when align is not a power of two, capacity is 0, or
/// capacity rounded up to align overflows isize"; AlignedBuf::zeroed: "As for new".
#[test]
fn aligned_buf_new_and_zeroed_refuse_bad_layouts() {
    for make in [AlignedBuf::new, AlignedBuf::zeroed] {
        for align in [0, 3, 6, 4095, 4097, usize::MAX] {
            assert!(invalid_input(make(4096, align)), "align {align}");
        }
        assert!(invalid_input(make(0, 4096)), "capacity 0");
        assert!(invalid_input(make(0, 1)), "capacity 0, align 1");
        assert!(
            invalid_input(make(isize::MAX as usize, 4096)),
            "rounds past isize"
        );
        assert!(invalid_input(make(usize::MAX, 1)), "past isize");
        assert!(
            invalid_input(make(usize::MAX - 100, 4096)),
            "rounding overflows usize"
        );
    }
}

/// AlignedBuf::new: "An empty buffer of capacity bytes whose address is a multiple of align";
/// capacity "fixed when it was made"; align "The alignment the buffer was made with".
#[test]
fn aligned_buf_new_is_empty_and_aligned() {
    for align in [1, 2, 8, 512, 4096, 65536, 1 << 21] {
        for capacity in [1, 100, 4096, 4097, 3 * 4096] {
            let b = AlignedBuf::new(capacity, align).unwrap();
            assert_eq!(b.as_ptr() as usize % align, 0, "{capacity} {align}");
            assert_eq!((b.len(), b.capacity(), b.align()), (0, capacity, align));
            assert!(b.is_empty());
            assert!(!b.is_registered(), "a buffer of new is not registered");
            assert_eq!(&b[..], &[] as &[u8]);
        }
    }
}

/// AlignedBuf::zeroed: "A buffer of len zero bytes (capacity len) whose address is a multiple
/// of align".
#[test]
fn aligned_buf_zeroed_is_full_of_zeros() {
    for (len, align) in [(1, 1), (4096, 4096), (5000, 512), (1 << 20, 1 << 16)] {
        let b = AlignedBuf::zeroed(len, align).unwrap();
        assert_eq!((b.len(), b.capacity(), b.align()), (len, len, align));
        assert_eq!(b.as_ptr() as usize % align, 0);
        assert!(b.iter().all(|&x| x == 0));
        assert!(!b.is_empty());
        assert!(!b.is_registered());
    }
}

/// resize: "Makes the buffer len bytes long, filling new bytes with value"; truncate: "does
/// nothing if it holds no more"; clear: "its capacity stays"; extend_from_slice appends;
/// spare_capacity_mut: "capacity() - len() bytes"; DerefMut and AsMut write the bytes.
#[test]
fn aligned_buf_length_operations() {
    let mut b = AlignedBuf::new(16, 8).unwrap();
    let ptr = b.as_ptr();
    b.extend_from_slice(b"abc");
    assert_eq!(&b[..], b"abc");
    assert_eq!(b.spare_capacity_mut().len(), 13);
    b.resize(6, b'x');
    assert_eq!(&b[..], b"abcxxx");
    b.resize(2, b'y');
    assert_eq!(&b[..], b"ab", "resize shortens");
    b.resize(4, b'z');
    assert_eq!(
        &b[..],
        b"abzz",
        "bytes past a shrink are refilled with value"
    );
    b.truncate(10);
    assert_eq!(&b[..], b"abzz", "truncate past len does nothing");
    b.truncate(1);
    assert_eq!(&b[..], b"a");
    b[0] = b'Q';
    b.as_mut()[0] += 1;
    assert_eq!(b.as_ref(), b"R");
    b.extend_from_slice(&[]);
    b.extend_from_slice(&[1; 15]);
    assert_eq!(
        (b.len(), b.spare_capacity_mut().len()),
        (16, 0),
        "exactly full"
    );
    b.clear();
    assert_eq!(
        (b.len(), b.capacity(), b.as_ptr()),
        (0, 16, ptr),
        "never reallocates"
    );
    assert_eq!(b.spare_capacity_mut().len(), 16);
    b.resize(16, 9);
    assert_eq!(&b[..], &[9; 16]);
    assert!(!format!("{b:?}").is_empty());
}

/// resize: "Panics When len is more than the capacity: the buffer never grows";
/// extend_from_slice: "Panics When they do not fit in the spare capacity".
#[test]
fn aligned_buf_never_grows() {
    let r = catch_unwind(|| {
        let mut b = AlignedBuf::new(8, 8).unwrap();
        b.resize(9, 0);
    });
    assert!(r.is_err(), "resize past the capacity panics");
    let r = catch_unwind(|| {
        let mut b = AlignedBuf::new(8, 8).unwrap();
        b.extend_from_slice(b"12345");
        b.extend_from_slice(b"6789");
    });
    assert!(r.is_err(), "extend_from_slice past the capacity panics");
    let r = catch_unwind(|| {
        let mut b = AlignedBuf::zeroed(8, 8).unwrap();
        b.extend_from_slice(b"1");
    });
    assert!(r.is_err(), "a zeroed buffer is full");
}

/// "AlignedBuf ... is Send" (ARCHITECTURE), and the rustdoc lists Sync.
#[test]
fn aligned_buf_is_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<AlignedBuf>();
    let mut b = AlignedBuf::new(4096, 4096).unwrap();
    b.extend_from_slice(b"from here");
    let b = std::thread::spawn(move || {
        assert_eq!(&b[..], b"from here");
        b
    })
    .join()
    .unwrap();
    assert_eq!(b.as_ptr() as usize % 4096, 0);
}

// ---------------------------------------------------------------------------------------
// read and write
// ---------------------------------------------------------------------------------------

/// Io::read: "Reads into buf's spare capacity (buf[len..capacity]) from file offset offset;
/// the callback gets the byte count ... and buf with its length extended by it"; "comes back
/// as it went in". Io::write: "Writes buf[..] at file offset offset; the callback gets the
/// byte count written ... and buf".
#[test]
fn write_then_read_vec_at_offsets() {
    each("write_then_read_vec_at_offsets", |case| {
        let f = case.file("f", b"0123456789");
        let mut lp = case.lp();
        let out = b"abc".to_vec();
        let ptr = out.as_ptr();
        let (n, out) = lp.write(f.as_raw_fd(), out, 4);
        assert_eq!(n, Ok(3));
        assert_eq!(
            (&out[..], out.as_ptr()),
            (&b"abc"[..], ptr),
            "write gives buf back"
        );
        assert_eq!(contents(&case.path("f")), b"0123abc789");
        let (n, _) = lp.write(f.as_raw_fd(), b"XY".to_vec(), 12);
        assert_eq!(n, Ok(2));
        assert_eq!(
            contents(&case.path("f")),
            b"0123abc789\0\0XY",
            "a hole reads as zeros"
        );
        let buf = vec_with(b"pre", 8);
        let ptr = buf.as_ptr();
        let (n, buf) = lp.read(f.as_raw_fd(), buf, 2);
        assert_eq!(n, Ok(5), "fills the spare capacity only");
        assert_eq!(
            (&buf[..], buf.as_ptr(), buf.capacity()),
            (&b"pre23abc"[..], ptr, 8)
        );
        let (n, buf) = lp.read(f.as_raw_fd(), Vec::with_capacity(100), 11);
        assert_eq!(
            (n, &buf[..]),
            (Ok(3), &b"\0XY"[..]),
            "a short read at the end"
        );
    });
}

/// The same through AlignedBuf: "every file operation accepts either and hands back the kind
/// it got" (README).
#[test]
fn write_then_read_aligned_buf() {
    each("write_then_read_aligned_buf", |case| {
        let f = case.file("f", b"");
        let mut lp = case.lp();
        let mut out = AlignedBuf::new(64, 64).unwrap();
        out.extend_from_slice(b"aligned bytes");
        let ptr = out.as_ptr();
        let (n, out) = lp.write(f.as_raw_fd(), out, 1);
        assert_eq!(n, Ok(13));
        assert_eq!((&out[..], out.as_ptr()), (&b"aligned bytes"[..], ptr));
        let mut buf = AlignedBuf::new(8, 4096).unwrap();
        buf.extend_from_slice(b"<");
        let (n, buf) = lp.read(f.as_raw_fd(), buf, 0);
        assert_eq!((n, &buf[..]), (Ok(7), &b"<\0aligne"[..]));
        assert_eq!((buf.capacity(), buf.align()), (8, 4096));
    });
}

/// Io::read: "the byte count (0 at end of file)", and the buffer unchanged.
#[test]
fn read_at_or_past_end_of_file_returns_zero() {
    each("read_at_or_past_end_of_file_returns_zero", |case| {
        let f = case.file("f", b"1234");
        let mut lp = case.lp();
        for off in [4, 5, 1 << 40] {
            let (n, buf) = lp.read(f.as_raw_fd(), vec_with(b"k", 16), off);
            assert_eq!((n, &buf[..]), (Ok(0), &b"k"[..]), "offset {off}");
            let (n, buf) = lp.read(f.as_raw_fd(), AlignedBuf::new(16, 16).unwrap(), off);
            assert_eq!((n, buf.len()), (Ok(0), 0), "offset {off}");
        }
        let empty = case.file("empty", b"");
        let (n, _) = lp.read(empty.as_raw_fd(), Vec::with_capacity(1), u64::MAX);
        assert_eq!(n, Ok(0));
    });
}

/// Io::read, Errors: "When ... buf has no spare capacity; the error returns buf";
/// ScheduleErrorKind::NoSpareCapacity: "A recv or read buffer has no spare capacity".
#[test]
fn read_into_full_buffer_is_refused_and_returns_it() {
    each("read_into_full_buffer_is_refused_and_returns_it", |case| {
        let f = case.file("f", b"data");
        let mut lp = case.lp();
        let full = vec_with(b"full", 4);
        let ptr = full.as_ptr();
        let e = lp
            .io
            .read(1, f.as_raw_fd(), full, 0, on_file::<Vec<u8>>)
            .unwrap_err();
        assert_eq!(e.kind, ScheduleErrorKind::NoSpareCapacity);
        assert_eq!((&e.value[..], e.value.as_ptr()), (&b"full"[..], ptr));
        let e = lp
            .io
            .read(1, f.as_raw_fd(), Vec::new(), 0, on_file::<Vec<u8>>)
            .unwrap_err();
        assert_eq!(e.kind, ScheduleErrorKind::NoSpareCapacity);
        let z = AlignedBuf::zeroed(4096, 4096).unwrap();
        let ptr = z.as_ptr();
        let e = lp
            .io
            .read(1, f.as_raw_fd(), z, 0, on_file::<AlignedBuf>)
            .unwrap_err();
        assert_eq!(e.kind, ScheduleErrorKind::NoSpareCapacity);
        assert_eq!((e.value.len(), e.value.as_ptr()), (4096, ptr));
        assert_eq!(lp.io.in_flight(), 0, "nothing was scheduled");
        assert_eq!(lp.io.stats().ops_submitted, 0);
    });
}

/// Io::read/Io::write: "offset u64::MAX reads [writes] at the file's current position and
/// advances it, on every backend".
#[test]
fn offset_u64_max_uses_and_advances_the_file_position() {
    each(
        "offset_u64_max_uses_and_advances_the_file_position",
        |case| {
            let f = case.file("f", b"0123456789");
            (&f).seek(SeekFrom::Start(3)).unwrap();
            let mut lp = case.lp();
            let (n, buf) = lp.read(f.as_raw_fd(), Vec::with_capacity(4), u64::MAX);
            assert_eq!((n, &buf[..]), (Ok(4), &b"3456"[..]));
            assert_eq!(position(&f), 7, "the read advanced the position");
            let (n, _) = lp.write(f.as_raw_fd(), b"ab".to_vec(), u64::MAX);
            assert_eq!(n, Ok(2));
            assert_eq!(position(&f), 9, "the write advanced the position");
            let (n, _) = lp.write(f.as_raw_fd(), b"cd".to_vec(), u64::MAX);
            assert_eq!(n, Ok(2));
            assert_eq!(contents(&case.path("f")), b"0123456abcd");
            let mut a = AlignedBuf::new(8, 8).unwrap();
            a.extend_from_slice(b"!");
            let (n, _) = lp.write(f.as_raw_fd(), a, u64::MAX);
            assert_eq!((n, position(&f)), (Ok(1), 12));
        },
    );
}

/// An explicit offset names the place in the file (pread/pwrite), whatever the position: a
/// read or write at an offset neither uses nor moves the descriptor's position.
#[test]
fn explicit_offset_leaves_the_file_position_alone() {
    alike("explicit_offset_leaves_the_file_position_alone", |case| {
        let f = case.file("f", b"0123456789");
        (&f).seek(SeekFrom::Start(2)).unwrap();
        let mut lp = case.lp();
        let (n, buf) = lp.read(f.as_raw_fd(), Vec::with_capacity(3), 6);
        assert_eq!((n, &buf[..]), (Ok(3), &b"678"[..]));
        let (n, _) = lp.write(f.as_raw_fd(), b"w".to_vec(), 0);
        assert_eq!(n, Ok(1));
        (position(&f), contents(&case.path("f")))
    });
}

/// Io::write on a file opened O_APPEND: whatever lands where the kernel puts it; all backends
/// alike (the docs name no difference).
#[test]
fn write_to_append_only_file_is_alike() {
    alike("write_to_append_only_file_is_alike", |case| {
        case.file("f", b"base");
        let f = OpenOptions::new()
            .append(true)
            .open(case.path("f"))
            .unwrap();
        let mut lp = case.lp();
        let (a, _) = lp.write(f.as_raw_fd(), b"-one".to_vec(), 0);
        let (b, _) = lp.write(f.as_raw_fd(), b"-two".to_vec(), u64::MAX);
        (a, b, contents(&case.path("f")))
    });
}

/// Every result reaches its callback as an io::Error with the OS code, and the buffer comes
/// back "whatever happens (completion, error, cancel ...)" (ARCHITECTURE, Buffer ownership).
#[test]
fn failed_read_and_write_give_the_buffer_back() {
    alike("failed_read_and_write_give_the_buffer_back", |case| {
        let ro = case.file("f", b"abc");
        drop(ro);
        let ro = File::open(case.path("f")).unwrap();
        let wo = OpenOptions::new().write(true).open(case.path("f")).unwrap();
        let dir = case.dir_fd("d");
        let mut lp = case.lp();
        let mut answers = Vec::new();
        for fd in [ro.as_raw_fd(), wo.as_raw_fd(), dir.as_raw_fd(), 1 << 20, -1] {
            let (r, buf) = lp.read(fd, vec_with(b"x", 8), 0);
            let n = *r.as_ref().unwrap_or(&0);
            assert_eq!((buf.len(), buf.capacity(), buf[0]), (1 + n, 8, b'x'));
            let (w, buf) = lp.write(fd, b"yz".to_vec(), 0);
            assert_eq!(&buf[..], b"yz");
            let mut a = AlignedBuf::new(4096, 4096).unwrap();
            a.extend_from_slice(b"q");
            let (ra, a) = lp.read(fd, a, 0);
            assert_eq!(a.len(), 1 + *ra.as_ref().unwrap_or(&0));
            let (wa, a) = lp.write(fd, a, 100);
            assert_eq!(a[0], b'q');
            answers.push((r.map(|_| ()), w.map(|_| ()), ra.map(|_| ()), wa.map(|_| ())));
        }
        let e = |r: Res<()>| r.is_err();
        assert!(e(answers[0].1) && e(answers[1].0) && e(answers[2].0) && e(answers[3].0));
        (answers, contents(&case.path("f")))
    });
}

// ---------------------------------------------------------------------------------------
// Pipes: the documented differences between backends
// ---------------------------------------------------------------------------------------

fn pipe(flags: rustix::pipe::PipeFlags) -> (OwnedFd, OwnedFd) {
    rustix::pipe::pipe_with(flags | rustix::pipe::PipeFlags::CLOEXEC).unwrap()
}

/// Io::read, Backends: "On a pipe io_uring ignores any other offset and reads, while epoll and
/// kqueue fail with ESPIPE; at u64::MAX every backend reads the pipe." Io::write likewise.
#[test]
fn pipe_offsets_differ_as_documented() {
    each("pipe_offsets_differ_as_documented", |case| {
        let (r, w) = pipe(rustix::pipe::PipeFlags::empty());
        let mut lp = case.lp();
        let (n, _) = lp.write(w.as_raw_fd(), b"one".to_vec(), 5);
        let (m, buf) = lp.write(w.as_raw_fd(), b"two".to_vec(), u64::MAX);
        assert_eq!(
            (m, &buf[..]),
            (Ok(3), &b"two"[..]),
            "u64::MAX writes a pipe everywhere"
        );
        let (k, got) = lp.read(r.as_raw_fd(), Vec::with_capacity(64), 9);
        if case.v.is_uring() {
            assert_eq!((n, k), (Ok(3), Ok(6)), "io_uring ignores the offset");
            assert_eq!(&got[..], b"onetwo");
        } else {
            assert_eq!((n, k), (Err(libc::ESPIPE), Err(libc::ESPIPE)));
            assert!(got.is_empty(), "a failed read leaves the buffer as it was");
            let (k, got) = lp.read(r.as_raw_fd(), Vec::with_capacity(64), u64::MAX);
            assert_eq!((k, &got[..]), (Ok(3), &b"two"[..]), "u64::MAX reads a pipe");
        }
    });
}

/// Io::read, Backends: "on an empty non-blocking pipe it fails with EAGAIN" on epoll and
/// kqueue, and "io_uring waits for the data without blocking the loop".
#[test]
fn read_of_empty_nonblocking_pipe() {
    each("read_of_empty_nonblocking_pipe", |case| {
        let (r, w) = pipe(rustix::pipe::PipeFlags::NONBLOCK);
        let mut lp = case.lp();
        lp.io
            .read(
                1,
                r.as_raw_fd(),
                Vec::with_capacity(8),
                u64::MAX,
                on_file::<Vec<u8>>,
            )
            .unwrap();
        lp.io.run_for_ns(&mut lp.ctx, 2 * MS).unwrap();
        if case.v.is_uring() {
            assert!(
                lp.ctx.ev.is_empty(),
                "io_uring waits for the data: {:?}",
                lp.ctx
            );
            rustix::io::write(&w, b"late").unwrap();
            let (n, buf) = Vec::<u8>::take_one(lp.done(1));
            assert_eq!((n, &buf[..]), (Ok(4), &b"late"[..]));
        } else {
            let (n, buf) = Vec::<u8>::take_one(lp.done(1));
            assert_eq!((n, buf.len()), (Err(libc::EAGAIN), 0));
        }
    });
}

/// Io::read, Backends: "io_uring waits for the data without blocking the loop" (a blocking
/// pipe; on epoll and kqueue that would block the loop, so only io_uring runs this).
#[test]
fn uring_read_of_empty_blocking_pipe_waits_without_blocking_the_loop() {
    let variants = [Variant::Uring, Variant::UringMasked];
    each_of("uring_read_of_empty_blocking_pipe", &variants, |case| {
        let (r, w) = pipe(rustix::pipe::PipeFlags::empty());
        let mut lp = case.lp();
        lp.io
            .read(
                1,
                r.as_raw_fd(),
                Vec::with_capacity(8),
                0,
                on_file::<Vec<u8>>,
            )
            .unwrap();
        lp.io.timeout(2, MS, on_unit).unwrap();
        lp.io.run_for_ns(&mut lp.ctx, 5 * MS).unwrap();
        assert_eq!(lp.take(2).unit(), Ok(()), "the loop ran a timer meanwhile");
        assert!(lp.ctx.ev.is_empty());
        rustix::io::write(&w, b"x").unwrap();
        let (n, buf) = Vec::<u8>::take_one(lp.done(1));
        assert_eq!((n, &buf[..]), (Ok(1), &b"x"[..]));
    });
}

// ---------------------------------------------------------------------------------------
// Direct I/O
// ---------------------------------------------------------------------------------------

/// Whether the running kernel is `major.minor` or later.
fn kernel_at_least(major: u32, minor: u32) -> bool {
    let release = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let mut next = || {
        parts
            .next()
            .and_then(|p| p.parse::<u32>().ok())
            .unwrap_or(0)
    };
    (next(), next()) >= (major, minor)
}

/// Whether statx reports direct-I/O alignment for files here ("STATX_DIOALIGN, Linux 6.1 and
/// later, on file systems that report it": ext4 does).
fn dio_reported() -> bool {
    kernel_at_least(6, 1)
}

/// The alignment direct I/O needs on `f`, as statx reports it (both non-zero on ext4 from
/// Linux 6.1; the logical block size, 512, assumed before).
fn dio_align(lp: &mut Lp, f: &File) -> (usize, usize) {
    let st = lp
        .statx(f.as_raw_fd(), c(""), libc::AT_EMPTY_PATH)
        .expect("statx");
    if !dio_reported() {
        return (512, 512);
    }
    assert!(
        st.dio_mem_align > 0 && st.dio_offset_align > 0,
        "STATX_DIOALIGN: {st:?}"
    );
    (st.dio_mem_align as usize, st.dio_offset_align as usize)
}

/// README's taste of storage: an O_DIRECT append of a whole 4 KiB AlignedBuf, fdatasync, and
/// the bytes read back into a cleared AlignedBuf ("cleared before each read").
#[test]
fn direct_io_round_trip() {
    each("direct_io_round_trip", |case| {
        let Some(f) = direct_file(case, "log", 0) else {
            return;
        };
        let mut lp = case.lp();
        let mut tail = 0;
        for record in [&b"first"[..], b"second"] {
            let mut block = AlignedBuf::new(4096, 4096).unwrap();
            block.extend_from_slice(record);
            block.resize(4096, 0);
            let (n, block) = lp.write(f.as_raw_fd(), block, tail);
            assert_eq!((n, block.len()), (Ok(4096), 4096));
            tail += 4096;
            assert_eq!(lp.fdatasync(f.as_raw_fd()), Ok(()));
        }
        let mut buf = AlignedBuf::new(8192, 4096).unwrap();
        for _ in 0..2 {
            buf.clear();
            let (n, back) = lp.read(f.as_raw_fd(), buf, 0);
            assert_eq!(n, Ok(8192));
            assert_eq!(
                (&back[..6], &back[4096..4102]),
                (&b"first\0"[..], &b"second"[..])
            );
            buf = back;
        }
        let (n, _) = lp.read(f.as_raw_fd(), AlignedBuf::new(4096, 4096).unwrap(), 8192);
        assert_eq!(n, Ok(0), "end of file");
    });
}

/// Io::read, Direct I/O: "A misaligned request is not fixed up: the kernel's EINVAL comes to
/// the callback as it is, on every backend". ext4 refuses a misaligned offset or length of a
/// direct write: EINVAL, the buffer back as it went in; a misaligned address gets what the
/// same pwrite gets.
#[test]
fn direct_io_misaligned_writes_fail_with_einval() {
    each("direct_io_misaligned_writes_fail_with_einval", |case| {
        let Some(f) = direct_file(case, "d", 16384) else {
            return;
        };
        let mut lp = case.lp();
        let (mem, off) = dio_align(&mut lp, &f);
        let fd = f.as_raw_fd();
        let (n, b) = lp.write(
            fd,
            AlignedBuf::zeroed(4096, 4096).unwrap(),
            off as u64 / 2 + 1,
        );
        assert_eq!((n, b.len()), (Err(libc::EINVAL), 4096), "misaligned offset");
        let mut short = AlignedBuf::new(4096, 4096).unwrap();
        short.resize(off / 2 + 1, 1);
        let (n, b) = lp.write(fd, short, 0);
        assert_eq!(
            (n, b.len()),
            (Err(libc::EINVAL), off / 2 + 1),
            "misaligned length"
        );
        // A buffer whose address is a multiple of `mem / 2` but not of `mem`.
        let mut keep = Vec::new();
        let v = loop {
            let mut b = AlignedBuf::new(4096, mem / 2).unwrap();
            b.resize(4096, 0);
            if !(b.as_ptr() as usize).is_multiple_of(mem) {
                break b;
            }
            keep.push(b);
            assert!(keep.len() < 1000, "no misaligned allocation");
        };
        let want = rustix::io::pwrite(&f, &v, 0).map_err(|e| e.raw_os_error());
        let (n, _) = lp.write(fd, v, 0);
        assert_eq!(n, want, "misaligned address: as the kernel answers");
        assert!(
            fs::read(case.path("d")).unwrap().iter().all(|&x| x == 0),
            "nothing written"
        );
    });
}

/// Io::read, Direct I/O: the kernel's answer "comes to the callback as it is": a misaligned
/// direct read gets exactly what the same pread gets (ext4 serves some through the page
/// cache rather than failing them).
#[test]
fn direct_io_misaligned_reads_answer_as_the_kernel_does() {
    each(
        "direct_io_misaligned_reads_answer_as_the_kernel_does",
        |case| {
            let Some(f) = direct_file(case, "d", 16384) else {
                return;
            };
            let mut lp = case.lp();
            let (mem, off) = dio_align(&mut lp, &f);
            let fd = f.as_raw_fd();
            let mut kernel = AlignedBuf::zeroed(8192, 4096).unwrap();
            let (n, _) = lp.read(fd, AlignedBuf::new(4096, 4096).unwrap(), off as u64 / 2 + 1);
            let want = rustix::io::pread(&f, &mut kernel[..4096], off as u64 / 2 + 1);
            assert_eq!(n, want.map_err(|e| e.raw_os_error()), "misaligned offset");
            let (n, _) = lp.read(fd, AlignedBuf::new(off / 2 + 1, 4096).unwrap(), 0);
            let want = rustix::io::pread(&f, &mut kernel[..off / 2 + 1], 0);
            assert_eq!(n, want.map_err(|e| e.raw_os_error()), "misaligned length");
            let mut at = AlignedBuf::new(4096 + mem / 2, 4096).unwrap();
            at.resize(mem / 2, 7);
            let (n, at) = lp.read(fd, at, 0);
            let want = rustix::io::pread(&f, &mut kernel[mem / 2..4096 + mem / 2], 0);
            assert_eq!(n, want.map_err(|e| e.raw_os_error()), "misaligned address");
            assert_eq!(
                &at[..mem / 2],
                &vec![7; mem / 2][..],
                "the bytes before stay"
            );
        },
    );
}

/// Direct I/O through the vectored forms: the buffers must each be aligned, and each is
/// filled in order.
#[test]
fn direct_io_vectored_round_trip() {
    each("direct_io_vectored_round_trip", |case| {
        let Some(f) = direct_file(case, "v", 0) else {
            return;
        };
        let mut lp = case.lp();
        let blocks: Vec<AlignedBuf> = (0..3u8)
            .map(|i| {
                let mut b = AlignedBuf::new(4096, 4096).unwrap();
                b.resize(4096, b'a' + i);
                b
            })
            .collect();
        let (n, blocks) = lp.writev(f.as_raw_fd(), blocks, 4096, libc::RWF_DSYNC);
        assert_eq!((n, blocks.len()), (Ok(3 * 4096), 3));
        assert!(blocks.iter().all(|b| b.len() == 4096), "bufs unchanged");
        let bufs = vec![
            AlignedBuf::new(8192, 4096).unwrap(),
            AlignedBuf::new(4096, 4096).unwrap(),
        ];
        let (n, bufs) = lp.readv(f.as_raw_fd(), bufs, 0, 0);
        assert_eq!(n, Ok(3 * 4096), "as much as the buffers hold");
        assert!(bufs[0][..4096].iter().all(|&x| x == 0), "the hole");
        assert!(bufs[0][4096..].iter().all(|&x| x == b'a'));
        assert_eq!((bufs[1][0], bufs[1][4095]), (b'b', b'b'));
    });
}

// ---------------------------------------------------------------------------------------
// read_vectored and write_vectored
// ---------------------------------------------------------------------------------------

/// Io::read_vectored: "in order (one preadv2: the first buffer is filled to its capacity before
/// the next gets a byte) ... each buffer's length extended by what landed in it ... buffers
/// without spare capacity take nothing".
#[test]
fn read_vectored_fills_buffers_in_order() {
    each("read_vectored_fills_buffers_in_order", |case| {
        let f = case.file("f", b"abcdefghijklmnopq");
        let mut lp = case.lp();
        let bufs = vec![
            Vec::with_capacity(3),
            vec_with(b"<", 4),
            Vec::new(),
            vec_with(b"full", 4),
            Vec::with_capacity(100),
            Vec::with_capacity(5),
        ];
        let ptrs: Vec<*const u8> = bufs.iter().map(|b| b.as_ptr()).collect();
        let (n, bufs) = lp.readv(f.as_raw_fd(), bufs, 2, 0);
        assert_eq!(n, Ok(15));
        let got: Vec<&[u8]> = bufs.iter().map(|b| &b[..]).collect();
        let want: [&[u8]; 6] = [b"cde", b"<fgh", b"", b"full", b"ijklmnopq", b""];
        assert_eq!(got, want);
        let back: Vec<*const u8> = bufs.iter().map(|b| b.as_ptr()).collect();
        assert_eq!(back, ptrs, "the same buffers come back, in order");
        let (n, bufs) = lp.readv(f.as_raw_fd(), vec![Vec::with_capacity(4)], 17, 0);
        assert_eq!((n, bufs[0].len()), (Ok(0), 0), "0 at end of file");
    });
}

/// Io::read_vectored: "At most GATHER_MAX buffers take part (the rest come back untouched)".
#[test]
fn read_vectored_takes_at_most_gather_max_buffers() {
    each("read_vectored_takes_at_most_gather_max_buffers", |case| {
        let f = case.file("f", &[b'z'; 200]);
        let mut lp = case.lp();
        let bufs: Vec<Vec<u8>> = (0..GATHER_MAX + 3).map(|_| Vec::with_capacity(2)).collect();
        let (n, bufs) = lp.readv(f.as_raw_fd(), bufs, 0, 0);
        assert_eq!(n, Ok(2 * GATHER_MAX));
        assert_eq!(bufs.len(), GATHER_MAX + 3, "every buffer comes back");
        assert!(bufs[..GATHER_MAX].iter().all(|b| &b[..] == b"zz"));
        assert!(
            bufs[GATHER_MAX..].iter().all(|b| b.is_empty()),
            "the rest untouched"
        );
    });
}

/// Io::write_vectored: "Writes the bytes of bufs, in order, at offset as one pwritev2 ... The
/// callback gets the byte count ... and bufs unchanged"; "At most GATHER_MAX buffers take part".
#[test]
fn write_vectored_gathers_in_order_up_to_gather_max() {
    each("write_vectored_gathers_in_order_up_to_gather_max", |case| {
        let f = case.file("f", b"0123456789");
        let mut lp = case.lp();
        let bufs = vec![b"head".to_vec(), Vec::new(), b"-body".to_vec()];
        let (n, bufs) = lp.writev(f.as_raw_fd(), bufs, 2, 0);
        assert_eq!(n, Ok(9));
        assert_eq!(bufs, vec![b"head".to_vec(), Vec::new(), b"-body".to_vec()]);
        assert_eq!(contents(&case.path("f")), b"01head-body");
        let many: Vec<Vec<u8>> = (0..GATHER_MAX + 5).map(|i| vec![i as u8]).collect();
        let (n, many) = lp.writev(f.as_raw_fd(), many, 0, 0);
        assert_eq!((n, many.len()), (Ok(GATHER_MAX), GATHER_MAX + 5));
        let want: Vec<u8> = (0..GATHER_MAX).map(|i| i as u8).collect();
        assert_eq!(
            contents(&case.path("f")),
            want,
            "only the first GATHER_MAX went out"
        );
        let (n, _) = lp.writev(f.as_raw_fd(), Vec::<Vec<u8>>::new(), 0, 0);
        let (m, _) = lp.writev(f.as_raw_fd(), vec![Vec::<u8>::new()], 0, 0);
        assert_eq!((n, m), (Ok(0), Ok(0)), "nothing to write writes nothing");
    });
}

/// Io::read_vectored/write_vectored: "offset u64::MAX reads [writes] at the file position".
#[test]
fn vectored_offset_u64_max_uses_the_file_position() {
    each("vectored_offset_u64_max_uses_the_file_position", |case| {
        let f = case.file("f", b"0123456789");
        (&f).seek(SeekFrom::Start(4)).unwrap();
        let mut lp = case.lp();
        let bufs = vec![Vec::with_capacity(1), Vec::with_capacity(2)];
        let (n, bufs) = lp.readv(f.as_raw_fd(), bufs, u64::MAX, 0);
        assert_eq!(
            (n, &bufs[0][..], &bufs[1][..]),
            (Ok(3), &b"4"[..], &b"56"[..])
        );
        assert_eq!(position(&f), 7);
        let (n, _) = lp.writev(
            f.as_raw_fd(),
            vec![b"a".to_vec(), b"b".to_vec()],
            u64::MAX,
            0,
        );
        assert_eq!((n, position(&f)), (Ok(2), 9));
        assert_eq!(contents(&case.path("f")), b"0123456ab9");
    });
}

/// Io::write_vectored: "libc::RWF_DSYNC makes the write durable by itself"; Io::read_vectored:
/// "io_uring and epoll pass them [flags] to the kernel ... kqueue's systems have no such flags,
/// so any but 0 fails there with EOPNOTSUPP"; Portability: "RWF_* flags exist on Linux only".
#[test]
fn vectored_rwf_flags_per_backend() {
    each("vectored_rwf_flags_per_backend", |case| {
        let f = case.file("f", b"");
        let mut lp = case.lp();
        let fd = f.as_raw_fd();
        let (w, bufs) = lp.writev(
            fd,
            vec![b"dur".to_vec(), b"able".to_vec()],
            0,
            libc::RWF_DSYNC,
        );
        assert_eq!(bufs.len(), 2);
        let (s, _) = lp.writev(fd, vec![b"!".to_vec()], 7, libc::RWF_SYNC);
        let (r, got) = lp.readv(fd, vec![Vec::with_capacity(8)], 0, libc::RWF_NOWAIT);
        // "kqueue's systems have no such flags": FreeBSD and macOS. The kqueue backend over the
        // double runs on Linux, which has them ("RWF_* flags exist on Linux only"), and passes
        // them on like epoll.
        assert_eq!((w, s, r), (Ok(7), Ok(1), Ok(8)));
        assert_eq!(&got[0][..], b"durable!");
        let (bad, _) = lp.readv(fd, vec![Vec::with_capacity(8)], 0, 0x4000_0000);
        assert!(
            matches!(bad, Err(libc::EOPNOTSUPP) | Err(libc::EINVAL)),
            "an unknown flag: {bad:?}"
        );
    });
}

/// Vectored writes and reads with AlignedBufs (no O_DIRECT), and a failed vectored operation
/// gives every buffer back unchanged.
#[test]
fn vectored_aligned_bufs_and_errors() {
    alike("vectored_aligned_bufs_and_errors", |case| {
        let f = case.file("f", b"");
        let mut lp = case.lp();
        let mk = |s: &[u8]| {
            let mut b = AlignedBuf::new(16, 16).unwrap();
            b.extend_from_slice(s);
            b
        };
        let (n, _) = lp.writev(f.as_raw_fd(), vec![mk(b"ab"), mk(b"cd")], 1, 0);
        let (m, got) = lp.readv(f.as_raw_fd(), vec![mk(b"<"), mk(b"")], 0, 0);
        let got: Vec<Vec<u8>> = got.iter().map(|b| b.to_vec()).collect();
        let ro = File::open(case.path("f")).unwrap();
        let (e, back) = lp.writev(ro.as_raw_fd(), vec![mk(b"x"), mk(b"yz")], 0, 0);
        assert_eq!((&back[0][..], &back[1][..]), (&b"x"[..], &b"yz"[..]));
        let (e2, back) = lp.readv(1 << 20, vec![vec_with(b"k", 4)], 0, 0);
        assert_eq!(&back[0][..], b"k");
        (n, m, got, e, e2)
    });
}

// ---------------------------------------------------------------------------------------
// ScheduleError: every slot in flight
// ---------------------------------------------------------------------------------------

fn exhausted<T>(e: ScheduleError<T>) -> T {
    assert_eq!(e.kind, ScheduleErrorKind::SlotsExhausted { ops_max: 1 });
    e.value
}

/// Each storage operation, Errors: "When every slot is in flight; the error returns buf [bufs,
/// path, both paths]" (ScheduleError: "Nothing is lost").
#[test]
fn every_storage_operation_returns_its_value_when_slots_are_exhausted() {
    each(
        "every_storage_operation_returns_its_value_when_slots_are_exhausted",
        |case| {
            let f = case.file("f", b"");
            let fd = f.as_raw_fd();
            let mut lp = case.lp_with(&case.options(1));
            lp.io.nop(1, on_unit).unwrap();
            let io = &mut lp.io;
            let v = exhausted(
                io.read(2, fd, vec_with(b"r", 9), 0, on_file::<Vec<u8>>)
                    .unwrap_err(),
            );
            assert_eq!((&v[..], v.capacity()), (&b"r"[..], 9));
            let v = exhausted(
                io.write(2, fd, b"w".to_vec(), 0, on_file::<Vec<u8>>)
                    .unwrap_err(),
            );
            assert_eq!(&v[..], b"w");
            let a = AlignedBuf::zeroed(4096, 4096).unwrap();
            let ptr = a.as_ptr();
            let a = exhausted(io.write(2, fd, a, 0, on_file::<AlignedBuf>).unwrap_err());
            assert_eq!((a.as_ptr(), a.len()), (ptr, 4096));
            let a = exhausted(
                io.read(2, fd, AlignedBuf::new(8, 8).unwrap(), 0, on_file)
                    .unwrap_err(),
            );
            assert_eq!(a.capacity(), 8);
            let bufs = vec![b"a".to_vec(), b"b".to_vec()];
            let v = exhausted(io.write_vectored(2, fd, bufs, 0, 0, on_files).unwrap_err());
            assert_eq!(v, vec![b"a".to_vec(), b"b".to_vec()]);
            let bufs = vec![AlignedBuf::new(8, 8).unwrap()];
            let v = exhausted(io.read_vectored(2, fd, bufs, 0, 0, on_files).unwrap_err());
            assert_eq!(v.len(), 1);
            exhausted(io.fsync(2, fd, on_unit).unwrap_err());
            exhausted(io.fdatasync(2, fd, on_unit).unwrap_err());
            exhausted(io.fallocate(2, fd, 0, 0, 4096, on_unit).unwrap_err());
            exhausted(io.ftruncate(2, fd, 10, on_unit).unwrap_err());
            let p = exhausted(io.statx(2, AT_FDCWD, c("/s"), 0, on_stat).unwrap_err());
            assert_eq!(p, c("/s"));
            let p = exhausted(
                io.openat(2, AT_FDCWD, c("/o"), libc::O_RDONLY, 0, on_fd)
                    .unwrap_err(),
            );
            assert_eq!(p, c("/o"));
            let r = io.renameat(2, AT_FDCWD, c("a"), AT_FDCWD, c("b"), 0, on_unit);
            assert_eq!(exhausted(r.unwrap_err()), (c("a"), c("b")));
            assert_eq!(
                exhausted(io.unlinkat(2, AT_FDCWD, c("u"), 0, on_unit).unwrap_err()),
                c("u")
            );
            assert_eq!(
                exhausted(io.mkdirat(2, AT_FDCWD, c("m"), 0, on_unit).unwrap_err()),
                c("m")
            );
            lp.settle();
            assert_eq!(lp.take(1).unit(), Ok(()));
            assert!(lp.ctx.ev.is_empty(), "nothing refused ran: {:?}", lp.ctx);
            assert_eq!(std::fs::metadata(case.path("f")).unwrap().len(), 0);
        },
    );
}

// ---------------------------------------------------------------------------------------
// fsync, fdatasync, fallocate, ftruncate
// ---------------------------------------------------------------------------------------

/// Io::fsync/Io::fdatasync succeed on a written file and on a directory ("Io::fsync a
/// descriptor of each [directory] (opened O_RDONLY | O_DIRECTORY)"); a descriptor that is not
/// open fails with EBADF on every backend, and a pipe as fsync(2) says.
#[test]
fn fsync_and_fdatasync() {
    alike("fsync_and_fdatasync", |case| {
        let f = case.file("f", b"x");
        let dir = case.dir_fd("d");
        let (r, _w) = pipe(rustix::pipe::PipeFlags::empty());
        let mut lp = case.lp();
        let mut got = Vec::new();
        for fd in [f.as_raw_fd(), dir.as_raw_fd()] {
            assert_eq!((lp.fsync(fd), lp.fdatasync(fd)), (Ok(()), Ok(())));
        }
        for fd in [1 << 20, -1, r.as_raw_fd()] {
            got.push((lp.fsync(fd), lp.fdatasync(fd)));
        }
        let ebadf = Err(libc::EBADF);
        assert_eq!(got[..2], [(ebadf, ebadf), (ebadf, ebadf)]);
        let einval = Err(libc::EINVAL);
        assert_eq!(got[2], (einval, einval), "fsync(2): EINVAL for a pipe");
        got
    });
}

/// Io::fallocate: "With mode 0 the file grows to offset + len if shorter"; "Linux mode flags such
/// as libc::FALLOC_FL_KEEP_SIZE"; FileStat::blocks: "what fallocate reserves shows here".
#[test]
fn fallocate_grows_and_keep_size_reserves() {
    each("fallocate_grows_and_keep_size_reserves", |case| {
        let f = case.file("f", b"abc");
        let fd = f.as_raw_fd();
        let mut lp = case.lp();
        assert_eq!(lp.fallocate(fd, 0, 4096, 8192), Ok(()));
        let st = lp.statx(fd, c(""), libc::AT_EMPTY_PATH).unwrap();
        assert_eq!(st.size, 12288, "grows to offset + len");
        assert!(st.blocks >= 16, "8 KiB reserved: {st:?}");
        assert_eq!(
            &contents(&case.path("f"))[..4],
            b"abc\0",
            "data kept, the rest zeros"
        );
        assert_eq!(lp.fallocate(fd, 0, 0, 100), Ok(()));
        assert_eq!(f.metadata().unwrap().len(), 12288, "mode 0 never shrinks");
        let before = lp.statx(fd, c(""), libc::AT_EMPTY_PATH).unwrap().blocks;
        assert_eq!(
            lp.fallocate(fd, libc::FALLOC_FL_KEEP_SIZE, 1 << 20, 1 << 16),
            Ok(())
        );
        let st = lp.statx(fd, c(""), libc::AT_EMPTY_PATH).unwrap();
        assert_eq!(st.size, 12288, "KEEP_SIZE keeps the size");
        assert!(
            st.blocks >= before + 128,
            "but reserves 64 KiB: {before} -> {}",
            st.blocks
        );
        let punch = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
        assert_eq!(lp.fallocate(fd, punch, 0, 4096), Ok(()));
        assert_eq!(
            &contents(&case.path("f"))[..4],
            b"\0\0\0\0",
            "a punched hole reads 0"
        );
    });
}

/// Io::fallocate's failures: the docs name no difference on Linux, so every backend answers
/// alike (a read-only descriptor, a pipe, a bad descriptor, PUNCH_HOLE without KEEP_SIZE,
/// a zero length).
#[test]
fn fallocate_errors_are_alike() {
    alike("fallocate_errors_are_alike", |case| {
        case.file("f", b"abc");
        let ro = File::open(case.path("f")).unwrap();
        let rw = OpenOptions::new().write(true).open(case.path("f")).unwrap();
        let (r, _w) = pipe(rustix::pipe::PipeFlags::empty());
        let mut lp = case.lp();
        let got = vec![
            lp.fallocate(ro.as_raw_fd(), 0, 0, 4096),
            lp.fallocate(r.as_raw_fd(), 0, 0, 4096),
            lp.fallocate(1 << 20, 0, 0, 4096),
            lp.fallocate(rw.as_raw_fd(), libc::FALLOC_FL_PUNCH_HOLE, 0, 4096),
            lp.fallocate(rw.as_raw_fd(), 0, 0, 0),
            lp.fallocate(rw.as_raw_fd(), 0, u64::MAX - 10, 4096),
        ];
        assert_eq!(
            got[0],
            Err(libc::EBADF),
            "fallocate(2): not open for writing"
        );
        assert_eq!(got[2], Err(libc::EBADF));
        assert_eq!(got[4], Err(libc::EINVAL), "fallocate(2): len 0");
        got
    });
}

/// Io::ftruncate: "Sets fd's size to len bytes (ftruncate(2)): cut, or extended with zeros".
#[test]
fn ftruncate_cuts_and_extends_with_zeros() {
    each("ftruncate_cuts_and_extends_with_zeros", |case| {
        let f = case.file("f", b"0123456789");
        let fd = f.as_raw_fd();
        let mut lp = case.lp();
        assert_eq!(lp.ftruncate(fd, 4), Ok(()));
        assert_eq!(contents(&case.path("f")), b"0123");
        assert_eq!(lp.ftruncate(fd, 8), Ok(()));
        assert_eq!(
            contents(&case.path("f")),
            b"0123\0\0\0\0",
            "extended with zeros"
        );
        assert_eq!(lp.ftruncate(fd, 8), Ok(()), "the same size again");
        assert_eq!(lp.ftruncate(fd, 0), Ok(()));
        assert_eq!(f.metadata().unwrap().len(), 0);
        assert_eq!(lp.ftruncate(fd, 1 << 33), Ok(()), "a sparse 8 GiB");
        assert_eq!(f.metadata().unwrap().len(), 1 << 33);
    });
}

/// Io::ftruncate's failures, alike on every backend (ftruncate(2): a read-only descriptor or
/// a directory is EINVAL or EBADF; a bad descriptor EBADF; a negative length EINVAL).
#[test]
fn ftruncate_errors_are_alike() {
    alike("ftruncate_errors_are_alike", |case| {
        case.file("f", b"abc");
        let ro = File::open(case.path("f")).unwrap();
        let rw = OpenOptions::new().write(true).open(case.path("f")).unwrap();
        let dir = case.dir_fd("d");
        let (r, _w) = pipe(rustix::pipe::PipeFlags::empty());
        let mut lp = case.lp();
        let got = vec![
            lp.ftruncate(ro.as_raw_fd(), 0),
            lp.ftruncate(dir.as_raw_fd(), 0),
            lp.ftruncate(r.as_raw_fd(), 0),
            lp.ftruncate(1 << 20, 0),
            lp.ftruncate(rw.as_raw_fd(), u64::MAX),
            lp.ftruncate(rw.as_raw_fd(), 1 << 63),
        ];
        assert!(got.iter().all(|r| r.is_err()), "{got:?}");
        assert_eq!(contents(&case.path("f")), b"abc");
        got
    });
}

// ---------------------------------------------------------------------------------------
// statx
// ---------------------------------------------------------------------------------------

/// Io::statx: "its size, type and permissions, allocated blocks, and the alignment direct I/O
/// needs"; FileStat's fields as stat(2) reports them (ino, nlink, mode, block_size).
#[test]
fn statx_describes_a_file_by_path() {
    each("statx_describes_a_file_by_path", |case| {
        let f = case.file("f", &[1; 5000]);
        f.set_permissions(fs::Permissions::from_mode(0o640))
            .unwrap();
        f.sync_all().unwrap();
        fs::hard_link(case.path("f"), case.path("link")).unwrap();
        let md = fs::metadata(case.path("f")).unwrap();
        let mut lp = case.lp();
        let st = lp.statx(AT_FDCWD, case.cpath("f"), 0).expect("statx");
        assert_eq!(st.size, 5000);
        assert!(st.is_file() && !st.is_dir());
        assert_eq!(st.mode & libc::S_IFMT, libc::S_IFREG);
        assert_eq!(st.mode & 0o7777, 0o640);
        assert_eq!((st.ino, st.nlink), (md.ino(), 2));
        assert_eq!(
            (st.blocks, st.block_size),
            (md.blocks(), md.blksize() as u32)
        );
        assert!(
            st.blocks >= 10,
            "5000 bytes take at least ten 512-byte units"
        );
        if dio_reported() {
            assert!(
                st.dio_mem_align > 0 && st.dio_offset_align > 0,
                "ext4: {st:?}"
            );
            assert!(st.dio_mem_align.is_power_of_two());
            assert!(st.dio_offset_align.is_power_of_two());
        }
        let dir = case.dir_fd(".");
        let rel = lp
            .statx(dir.as_raw_fd(), c("f"), 0)
            .expect("relative to a directory");
        assert_eq!(rel, st, "the same file, the same answer");
        let by_fd = lp.statx(f.as_raw_fd(), c(""), libc::AT_EMPTY_PATH).unwrap();
        assert_eq!(by_fd, st, "AT_EMPTY_PATH describes the descriptor itself");
    });
}

/// The same file gives the same FileStat on every backend (the docs name no difference on
/// Linux).
#[test]
fn statx_answers_alike() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("blackbox_storage")
        .join(format!("statx_alike-{}", std::process::id()));
    fs::create_dir_all(dir.join("sub")).unwrap();
    let path = dir.join("f");
    fs::write(&path, b"same for all").unwrap();
    alike("statx_answers_alike", |case| {
        let mut lp = case.lp();
        let file = lp.statx(AT_FDCWD, cstr(&path), 0);
        let dir = lp.statx(AT_FDCWD, cstr(&dir), 0);
        let root = lp.statx(AT_FDCWD, c("/"), libc::AT_SYMLINK_NOFOLLOW);
        // Files whose file system reports no direct-I/O alignment: 0 (FileStat::dio_mem_align:
        // "0 where the kernel does not say").
        let null = lp.statx(AT_FDCWD, c("/dev/null"), 0).unwrap();
        assert_eq!((null.dio_mem_align, null.dio_offset_align), (0, 0));
        assert!(!null.is_file() && !null.is_dir());
        let proc = lp.statx(AT_FDCWD, c("/proc/self"), libc::AT_SYMLINK_NOFOLLOW);
        let proc = proc.map(|s| s.mode & libc::S_IFMT);
        assert_eq!(proc, Ok(libc::S_IFLNK));
        (file, dir, root, null)
    });
    fs::remove_dir_all(&dir).unwrap();
}

/// Io::statx: "with AT_EMPTY_PATH and an empty path, it describes the open descriptor dir
/// itself (Linux ...)", even once its name is gone.
#[test]
fn statx_empty_path_describes_an_unlinked_open_file() {
    each("statx_empty_path_describes_an_unlinked_open_file", |case| {
        let f = case.file("gone", b"still here");
        let ino = f.metadata().unwrap().ino();
        fs::remove_file(case.path("gone")).unwrap();
        let mut lp = case.lp();
        let st = lp
            .statx(f.as_raw_fd(), c(""), libc::AT_EMPTY_PATH)
            .expect("statx fd");
        assert_eq!((st.size, st.ino, st.nlink), (10, ino, 0));
        assert!(st.is_file());
        let err = lp.statx(f.as_raw_fd(), c(""), 0);
        assert_eq!(
            err,
            Err(libc::ENOENT),
            "an empty path without AT_EMPTY_PATH"
        );
        let dir = case.dir_fd("d");
        let st = lp
            .statx(dir.as_raw_fd(), c(""), libc::AT_EMPTY_PATH)
            .unwrap();
        assert!(st.is_dir() && !st.is_file());
    });
}

/// Io::statx: flags "libc::AT_SYMLINK_NOFOLLOW": a symlink itself (neither a file nor a
/// directory), else what it points at.
#[test]
fn statx_symlink_nofollow() {
    each("statx_symlink_nofollow", |case| {
        case.file("target", b"0123456789");
        std::os::unix::fs::symlink("target", case.path("ln")).unwrap();
        std::os::unix::fs::symlink("nowhere", case.path("dangling")).unwrap();
        let mut lp = case.lp();
        let link = lp
            .statx(AT_FDCWD, case.cpath("ln"), libc::AT_SYMLINK_NOFOLLOW)
            .unwrap();
        assert_eq!(link.mode & libc::S_IFMT, libc::S_IFLNK);
        assert!(!link.is_file() && !link.is_dir());
        assert_eq!(link.size, 6, "a symlink's size is its target's name");
        let followed = lp.statx(AT_FDCWD, case.cpath("ln"), 0).unwrap();
        assert!(followed.is_file());
        assert_eq!(followed.size, 10);
        let d = lp.statx(AT_FDCWD, case.cpath("dangling"), libc::AT_SYMLINK_NOFOLLOW);
        assert_eq!(d.map(|s| s.mode & libc::S_IFMT), Ok(libc::S_IFLNK));
        let d = lp.statx(AT_FDCWD, case.cpath("dangling"), 0);
        assert_eq!(d, Err(libc::ENOENT));
    });
}

/// Io::statx's failures alike on every backend: a missing name, a file used as a directory, a
/// bad directory descriptor for a relative path, a flag statx does not know.
#[test]
fn statx_errors_are_alike() {
    alike("statx_errors_are_alike", |case| {
        let f = case.file("f", b"");
        let mut lp = case.lp();
        let got = vec![
            lp.statx(AT_FDCWD, case.cpath("missing"), 0),
            lp.statx(AT_FDCWD, case.cpath("f/below"), 0),
            lp.statx(1 << 20, c("relative"), 0),
            lp.statx(f.as_raw_fd(), c("relative"), 0),
            lp.statx(AT_FDCWD, case.cpath("f"), 0x0100_0000),
        ];
        assert_eq!(got[0], Err(libc::ENOENT));
        assert_eq!(got[1], Err(libc::ENOTDIR));
        assert_eq!(got[2], Err(libc::EBADF));
        assert_eq!(got[3], Err(libc::ENOTDIR));
        got
    });
}

// ---------------------------------------------------------------------------------------
// openat
// ---------------------------------------------------------------------------------------

/// Io::openat: "Opens path relative to the directory dir ... with open(2) flags ... and mode
/// (permissions for O_CREAT ...); O_CLOEXEC is always added. The new descriptor is owned by the
/// callback's OwnedFd."
#[test]
fn openat_relative_to_a_directory_creates_with_mode_and_cloexec() {
    each("openat_relative_to_a_directory", |case| {
        let dir = case.dir_fd("d");
        let mut lp = case.lp();
        let flags = libc::O_CREAT | libc::O_EXCL | libc::O_RDWR;
        let fd = lp
            .openat(dir.as_raw_fd(), c("new"), flags, 0o640)
            .expect("create");
        assert!(is_cloexec(&fd), "O_CLOEXEC is always added");
        let md = fs::metadata(case.path("d/new")).unwrap();
        assert_eq!(md.permissions().mode() & 0o777, 0o640 & !umask());
        let (n, _) = lp.write(fd.as_raw_fd(), b"via the loop".to_vec(), 0);
        assert_eq!(n, Ok(12));
        drop(fd);
        assert_eq!(contents(&case.path("d/new")), b"via the loop");
        let again = lp.openat(dir.as_raw_fd(), c("new"), flags, 0o640);
        assert_eq!(again.err(), Some(libc::EEXIST), "O_EXCL");
        let fd = lp.openat(dir.as_raw_fd(), c("new"), libc::O_WRONLY | libc::O_TRUNC, 0);
        drop(fd.expect("O_TRUNC"));
        assert_eq!(contents(&case.path("d/new")), b"", "truncated");
        let fd = lp
            .openat(AT_FDCWD, case.cpath("d/new"), libc::O_RDONLY, 0)
            .unwrap();
        assert!(is_cloexec(&fd));
    });
}

/// The process's umask, read without changing it (other tests create files meanwhile).
fn umask() -> u32 {
    let status = fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("Umask:")).unwrap();
    u32::from_str_radix(line["Umask:".len()..].trim(), 8).unwrap()
}

/// Io::openat: dir is "ignored, as by openat(2), when path is absolute"; AT_FDCWD is the
/// working directory; failures come as open(2) gives them, alike on every backend.
#[test]
fn openat_absolute_paths_and_errors_are_alike() {
    alike("openat_absolute_paths_and_errors_are_alike", |case| {
        let f = case.file("f", b"abc");
        let mut lp = case.lp();
        let abs = lp.openat(f.as_raw_fd(), case.cpath("f"), libc::O_RDONLY, 0);
        let abs_bad = lp.openat(1 << 20, case.cpath("f"), libc::O_RDONLY, 0);
        assert!(
            abs.is_ok() && abs_bad.is_ok(),
            "dir ignored for an absolute path"
        );
        let cwd = std::env::current_dir().unwrap();
        let rel = lp.openat(AT_FDCWD, c("Cargo.toml"), libc::O_RDONLY, 0);
        assert_eq!(rel.is_ok(), cwd.join("Cargo.toml").exists(), "AT_FDCWD");
        let errs = vec![
            lp.openat(AT_FDCWD, case.cpath("missing"), libc::O_RDONLY, 0)
                .err(),
            lp.openat(AT_FDCWD, case.cpath("f/x"), libc::O_RDONLY, 0)
                .err(),
            lp.openat(f.as_raw_fd(), c("x"), libc::O_RDONLY, 0).err(),
            lp.openat(1 << 20, c("x"), libc::O_RDONLY, 0).err(),
            lp.openat(
                AT_FDCWD,
                case.cpath("f"),
                libc::O_RDONLY | libc::O_DIRECTORY,
                0,
            )
            .err(),
            lp.openat(AT_FDCWD, case.cpath(""), libc::O_WRONLY, 0).err(),
        ];
        let want = [
            libc::ENOENT,
            libc::ENOTDIR,
            libc::ENOTDIR,
            libc::EBADF,
            libc::ENOTDIR,
            libc::EISDIR,
        ];
        assert_eq!(errs, want.map(Some));
        errs
    });
}

fn fifo(case: &Case, name: &str) -> CString {
    rustix::fs::mkfifoat(
        rustix::fs::CWD,
        case.path(name),
        rustix::fs::Mode::from(0o600),
    )
    .unwrap();
    case.cpath(name)
}

/// Io::openat: "Open FIFOs with O_NONBLOCK to get the same answer on every backend": without
/// a peer, O_RDONLY opens at once and O_WRONLY fails with ENXIO.
#[test]
fn openat_fifo_nonblock_is_alike() {
    alike("openat_fifo_nonblock_is_alike", |case| {
        let path = fifo(case, "fifo");
        let mut lp = case.lp();
        let w = lp.openat(AT_FDCWD, path.clone(), libc::O_WRONLY | libc::O_NONBLOCK, 0);
        let r = lp.openat(AT_FDCWD, path.clone(), libc::O_RDONLY | libc::O_NONBLOCK, 0);
        assert!(r.is_ok(), "{r:?}");
        assert_eq!(w.as_ref().err(), Some(&libc::ENXIO));
        let w2 = lp.openat(AT_FDCWD, path, libc::O_WRONLY | libc::O_NONBLOCK, 0);
        assert!(w2.is_ok(), "with a reader, the writer opens");
        (w.err(), r.is_ok(), w2.is_ok())
    });
}

/// Io::openat on io_uring: "for a FIFO without a peer O_RDONLY opens at once, O_WRONLY fails
/// at once with ENXIO, and with O_CREAT or O_TRUNC the open waits in a kernel worker until
/// the peer opens it (and can be cancelled)".
#[test]
fn uring_openat_fifo_without_peer() {
    let variants = [Variant::Uring, Variant::UringMasked];
    each_of("uring_openat_fifo_without_peer", &variants, |case| {
        let path = fifo(case, "fifo");
        let mut lp = case.lp();
        let r = lp.openat(AT_FDCWD, path.clone(), libc::O_RDONLY, 0);
        assert!(r.is_ok(), "O_RDONLY opens at once: {r:?}");
        drop(r);
        let w = lp.openat(AT_FDCWD, path.clone(), libc::O_WRONLY, 0);
        assert_eq!(w.err(), Some(libc::ENXIO), "O_WRONLY fails at once");
        let flags = libc::O_WRONLY | libc::O_CREAT;
        let id = lp
            .io
            .openat(1, AT_FDCWD, path, flags, 0o600, on_fd)
            .unwrap();
        lp.io.run_for_ns(&mut lp.ctx, 5 * MS).unwrap();
        assert!(
            lp.ctx.ev.is_empty(),
            "O_CREAT waits for a peer: {:?}",
            lp.ctx
        );
        lp.io.cancel(2, id, on_unit).unwrap();
        lp.settle();
        assert_eq!(lp.take(2).unit(), Ok(()), "the cancel's answer");
        assert_eq!(lp.take(1).fd().err(), Some(libc::ECANCELED));
    });
}

/// Io::openat on io_uring, and Io::set_deadline: a FIFO open that waits for its peer ends
/// with ETIMEDOUT at its deadline, counted in Stats::deadlines_expired.
#[test]
fn uring_openat_fifo_deadline() {
    let variants = [Variant::Uring, Variant::UringMasked];
    each_of("uring_openat_fifo_deadline", &variants, |case| {
        let path = fifo(case, "fifo");
        let mut lp = case.lp();
        let flags = libc::O_RDONLY | libc::O_TRUNC;
        let id = lp.io.openat(1, AT_FDCWD, path, flags, 0, on_fd).unwrap();
        lp.io.set_deadline(id, 3 * MS).unwrap();
        lp.settle();
        assert_eq!(lp.take(1).fd().err(), Some(libc::ETIMEDOUT));
        assert_eq!(lp.io.stats().deadlines_expired, 1);
        assert_eq!(lp.io.set_deadline(id, MS), Err(DeadlineError::NotInFlight));
    });
}

// ---------------------------------------------------------------------------------------
// renameat, unlinkat, mkdirat
// ---------------------------------------------------------------------------------------

/// Io::renameat: "Renames old_path (relative to old_dir) to new_path (relative to new_dir),
/// replacing what is there (renameat2(2)), or with flags crate::RENAME_NOREPLACE failing with
/// EEXIST instead. RENAME_NOREPLACE works on Linux".
#[test]
fn renameat_replaces_or_refuses_with_noreplace() {
    each("renameat_replaces_or_refuses_with_noreplace", |case| {
        let a = case.dir_fd("a");
        let b = case.dir_fd("b");
        fs::write(case.path("a/x"), b"new").unwrap();
        fs::write(case.path("b/y"), b"old").unwrap();
        let mut lp = case.lp();
        let (ad, bd) = (a.as_raw_fd(), b.as_raw_fd());
        let r = lp.renameat(ad, c("x"), bd, c("y"), RENAME_NOREPLACE);
        assert_eq!(
            r,
            Err(libc::EEXIST),
            "RENAME_NOREPLACE onto an existing name"
        );
        assert_eq!(
            (contents(&case.path("a/x")), contents(&case.path("b/y"))),
            (b"new".to_vec(), b"old".to_vec())
        );
        assert_eq!(lp.renameat(ad, c("x"), bd, c("y"), 0), Ok(()), "replaces");
        assert_eq!(contents(&case.path("b/y")), b"new");
        assert!(!case.path("a/x").exists());
        let r = lp.renameat(bd, c("y"), ad, c("z"), RENAME_NOREPLACE);
        assert_eq!(r, Ok(()), "RENAME_NOREPLACE onto a free name");
        assert_eq!(contents(&case.path("a/z")), b"new");
        let r = lp.renameat(AT_FDCWD, case.cpath("a/z"), AT_FDCWD, case.cpath("top"), 0);
        assert_eq!(r, Ok(()), "absolute paths");
        assert_eq!(contents(&case.path("top")), b"new");
    });
}

/// Io::renameat's failures, alike on every backend (renameat2(2)).
#[test]
fn renameat_errors_are_alike() {
    alike("renameat_errors_are_alike", |case| {
        let d = case.dir_fd("d");
        fs::create_dir_all(case.path("full/inner")).unwrap();
        fs::create_dir_all(case.path("empty")).unwrap();
        fs::write(case.path("f"), b"f").unwrap();
        let mut lp = case.lp();
        let p = |n: &str| case.cpath(n);
        let got = vec![
            lp.renameat(AT_FDCWD, p("missing"), AT_FDCWD, p("m2"), 0),
            lp.renameat(AT_FDCWD, p("empty"), AT_FDCWD, p("full"), 0),
            lp.renameat(AT_FDCWD, p("f"), AT_FDCWD, p("empty"), 0),
            lp.renameat(AT_FDCWD, p("empty"), AT_FDCWD, p("f"), 0),
            lp.renameat(AT_FDCWD, p("empty"), AT_FDCWD, p("empty/sub"), 0),
            lp.renameat(AT_FDCWD, p("f"), AT_FDCWD, p("g"), 0x80),
            lp.renameat(1 << 20, c("f"), d.as_raw_fd(), c("g"), 0),
            lp.renameat(AT_FDCWD, p("f"), AT_FDCWD, p("f"), RENAME_NOREPLACE),
        ];
        assert_eq!(got[0], Err(libc::ENOENT));
        assert!(
            matches!(got[1], Err(libc::ENOTEMPTY) | Err(libc::EEXIST)),
            "{got:?}"
        );
        assert_eq!((got[2], got[3]), (Err(libc::EISDIR), Err(libc::ENOTDIR)));
        assert_eq!(
            (got[4], got[5], got[6]),
            (Err(libc::EINVAL), Err(libc::EINVAL), Err(libc::EBADF))
        );
        assert_eq!(contents(&case.path("f")), b"f");
        got
    });
}

/// Io::unlinkat: "Removes the name path relative to dir (unlinkat(2)): a file, or with flags
/// libc::AT_REMOVEDIR an empty directory."
#[test]
fn unlinkat_files_and_empty_directories() {
    each("unlinkat_files_and_empty_directories", |case| {
        let d = case.dir_fd("d");
        fs::write(case.path("d/f"), b"f").unwrap();
        fs::create_dir_all(case.path("d/empty")).unwrap();
        fs::create_dir_all(case.path("d/full/x")).unwrap();
        let mut lp = case.lp();
        let dfd = d.as_raw_fd();
        assert_eq!(
            lp.unlinkat(dfd, c("empty"), 0),
            Err(libc::EISDIR),
            "a directory"
        );
        assert_eq!(
            lp.unlinkat(dfd, c("f"), libc::AT_REMOVEDIR),
            Err(libc::ENOTDIR)
        );
        assert_eq!(
            lp.unlinkat(dfd, c("full"), libc::AT_REMOVEDIR),
            Err(libc::ENOTEMPTY)
        );
        assert_eq!(lp.unlinkat(dfd, c("missing"), 0), Err(libc::ENOENT));
        assert_eq!(lp.unlinkat(dfd, c("f/x"), 0), Err(libc::ENOTDIR));
        assert!(case.path("d/f").exists() && case.path("d/empty").exists());
        assert_eq!(lp.unlinkat(dfd, c("f"), 0), Ok(()));
        assert!(!case.path("d/f").exists());
        assert_eq!(lp.unlinkat(dfd, c("empty"), libc::AT_REMOVEDIR), Ok(()));
        assert!(!case.path("d/empty").exists());
        assert_eq!(
            lp.unlinkat(AT_FDCWD, case.cpath("d/full/x"), libc::AT_REMOVEDIR),
            Ok(())
        );
        assert_eq!(lp.fsync(dfd), Ok(()), "then flush the directory");
        assert_eq!(lp.unlinkat(1 << 20, c("f"), 0), Err(libc::EBADF));
        assert_eq!(
            lp.unlinkat(dfd, c("full"), 0x4),
            Err(libc::EINVAL),
            "an unknown flag"
        );
    });
}

/// Io::mkdirat: "Makes the directory path relative to dir with permissions mode (mkdirat(2),
/// less the umask)".
#[test]
fn mkdirat_makes_directories() {
    each("mkdirat_makes_directories", |case| {
        let d = case.dir_fd("d");
        fs::write(case.path("file"), b"").unwrap();
        let mut lp = case.lp();
        assert_eq!(lp.mkdirat(d.as_raw_fd(), c("sub"), 0o751), Ok(()));
        let md = fs::metadata(case.path("d/sub")).unwrap();
        assert!(md.is_dir());
        assert_eq!(md.permissions().mode() & 0o777, 0o751 & !umask());
        assert_eq!(
            lp.mkdirat(d.as_raw_fd(), c("sub"), 0o755),
            Err(libc::EEXIST)
        );
        assert_eq!(
            lp.mkdirat(AT_FDCWD, case.cpath("file"), 0o755),
            Err(libc::EEXIST)
        );
        assert_eq!(
            lp.mkdirat(AT_FDCWD, case.cpath("no/such"), 0o755),
            Err(libc::ENOENT)
        );
        assert_eq!(
            lp.mkdirat(AT_FDCWD, case.cpath("file/x"), 0o755),
            Err(libc::ENOTDIR)
        );
        assert_eq!(lp.mkdirat(1 << 20, c("x"), 0o755), Err(libc::EBADF));
        assert_eq!(lp.mkdirat(AT_FDCWD, case.cpath("abs"), 0o700), Ok(()));
        let st = lp.statx(AT_FDCWD, case.cpath("abs"), 0).unwrap();
        assert!(st.is_dir());
        assert_eq!(st.mode & 0o777, 0o700);
        assert_eq!(lp.fsync(d.as_raw_fd()), Ok(()), "then flush the parent");
    });
}

// ---------------------------------------------------------------------------------------
// Registered buffers
// ---------------------------------------------------------------------------------------

fn registered(case: &Case, buffers: u32, size: u32) -> Options {
    let mut o = case.options(16);
    o.registered = RegisteredOptions::new(buffers, size);
    o
}

/// Io::registered_buf: "Lends one of the loop's registered buffers: an empty AlignedBuf of
/// registered.buffer_size bytes, page-aligned, which goes back to the loop's set when dropped
/// ... None when every buffer is lent, or the loop has none"; AlignedBuf::is_registered.
#[test]
fn registered_bufs_are_counted_and_come_back_on_drop() {
    each(
        "registered_bufs_are_counted_and_come_back_on_drop",
        |case| {
            let mut lp = case.lp_with(&registered(case, 3, 8192));
            let mut lent: Vec<AlignedBuf> =
                (0..3).map(|_| lp.io.registered_buf().unwrap()).collect();
            assert!(lp.io.registered_buf().is_none(), "every buffer is lent");
            for b in &lent {
                assert_eq!((b.len(), b.capacity()), (0, 8192));
                assert_eq!(b.as_ptr() as usize % 4096, 0, "page-aligned");
                assert!(b.align() >= 4096 && b.align().is_power_of_two());
                assert!(b.is_registered());
            }
            let mut ptrs: Vec<usize> = lent.iter().map(|b| b.as_ptr() as usize).collect();
            ptrs.sort_unstable();
            ptrs.dedup();
            assert_eq!(ptrs.len(), 3, "three distinct buffers");
            let mut one = lent.pop().unwrap();
            one.extend_from_slice(b"dirty");
            drop(one);
            let back = lp.io.registered_buf().expect("a dropped buffer goes back");
            assert!(back.is_empty() && back.is_registered(), "lent empty again");
            assert!(lp.io.registered_buf().is_none());
            drop(lent);
            drop(back);
            let all: Vec<AlignedBuf> = (0..3).map(|_| lp.io.registered_buf().unwrap()).collect();
            assert_eq!(all.len(), 3);
            let mut none = case.lp();
            assert!(
                none.io.registered_buf().is_none(),
                "a loop without registered buffers"
            );
        },
    );
}

/// Io::registered_buf: goes back "when dropped (from any thread)" (ARCHITECTURE: "a mutex, so
/// from any thread").
#[test]
fn registered_buf_dropped_on_another_thread_comes_back() {
    each(
        "registered_buf_dropped_on_another_thread_comes_back",
        |case| {
            let mut lp = case.lp_with(&registered(case, 1, 4096));
            let b = lp.io.registered_buf().unwrap();
            assert!(lp.io.registered_buf().is_none());
            std::thread::spawn(move || {
                let mut b = b;
                b.extend_from_slice(b"elsewhere");
                drop(b);
            })
            .join()
            .unwrap();
            let b = lp.io.registered_buf().expect("back from the other thread");
            assert!(b.is_registered() && b.is_empty());
        },
    );
}

/// Registered buffers through read and write: "Read into it or write from it with Io::read and
/// Io::write as with any aligned buffer"; UringFeatures::registered_buffers says whether the
/// set was registered with the kernel (io_uring only: Stats::uring is None elsewhere).
#[test]
fn registered_bufs_read_and_write() {
    each("registered_bufs_read_and_write", |case| {
        let f = case.file("f", b"");
        let mut lp = case.lp_with(&registered(case, 2, 8192));
        if let Some(u) = lp.io.stats().uring {
            assert!(u.registered_buffers, "this kernel registers them: {u:?}");
        } else {
            assert!(!case.v.is_uring());
        }
        let mut w = lp.io.registered_buf().unwrap();
        w.extend_from_slice(b"0123456789");
        let (n, w) = lp.write(f.as_raw_fd(), w, 5);
        assert_eq!(n, Ok(10));
        assert!(w.is_registered(), "the same kind comes back");
        assert_eq!(contents(&case.path("f")), b"\0\0\0\0\x000123456789");
        let mut r = lp.io.registered_buf().unwrap();
        r.extend_from_slice(b"pre:");
        let (n, r) = lp.read(f.as_raw_fd(), r, 8);
        assert_eq!(
            (n, &r[..]),
            (Ok(7), &b"pre:3456789"[..]),
            "into the spare capacity"
        );
        let mut part = w;
        part.clear();
        part.resize(8192, b'z');
        let (n, _) = lp.write(f.as_raw_fd(), part, 0);
        assert_eq!(n, Ok(8192), "the whole buffer");
        let second = lp.io.registered_buf().unwrap();
        let (n, v) = lp.readv(f.as_raw_fd(), vec![r, second], 0, 0);
        // The first is filled to its capacity (past its 11 bytes), the second takes the rest.
        assert_eq!((n, v[0].len(), v[1].len()), (Ok(8192), 8192, 11));
    });
}

/// Registered buffers with O_DIRECT: page-aligned buffers of a multiple of 4096 bytes, which is
/// what direct I/O needs.
#[test]
fn registered_bufs_direct_io() {
    each("registered_bufs_direct_io", |case| {
        let Some(f) = direct_file(case, "d", 0) else {
            return;
        };
        let mut lp = case.lp_with(&registered(case, 2, 4096));
        let mut w = lp.io.registered_buf().unwrap();
        w.resize(4096, b'D');
        let (n, _) = lp.write(f.as_raw_fd(), w, 4096);
        assert_eq!(n, Ok(4096));
        let r = lp.io.registered_buf().unwrap();
        let (n, r) = lp.read(f.as_raw_fd(), r, 4096);
        assert_eq!(n, Ok(4096));
        assert!(r.iter().all(|&x| x == b'D'));
        assert!(
            lp.io.registered_buf().is_some(),
            "the write's buffer went back"
        );
    });
}

/// ARCHITECTURE: "On the other backends, and in another loop, they are plain aligned buffers";
/// the io_uring backend recognises its own set "by the set's identity ..., so a buffer of
/// another loop's set cannot name the wrong registered index". Dropped, it goes back to its own
/// set.
#[test]
fn registered_buf_used_with_another_loop() {
    each("registered_buf_used_with_another_loop", |case| {
        let f = case.file("f", b"");
        let mut owner = case.lp_with(&registered(case, 1, 4096));
        let mut other = case.lp_with(&registered(case, 1, 4096));
        let mut b = owner.io.registered_buf().unwrap();
        let mine = other.io.registered_buf().unwrap();
        b.extend_from_slice(b"owner's buffer");
        let (n, b) = other.write(f.as_raw_fd(), b, 0);
        assert_eq!(n, Ok(14));
        assert_eq!(contents(&case.path("f")), b"owner's buffer");
        let mut b = b;
        b.clear();
        let (n, b) = other.read(f.as_raw_fd(), b, 8);
        assert_eq!((n, &b[..]), (Ok(6), &b"buffer"[..]));
        let (n, _) = other.write(f.as_raw_fd(), mine, 0);
        assert_eq!(n, Ok(0), "an empty registered buffer writes nothing");
        assert!(
            other.io.registered_buf().is_some(),
            "the other loop's own came back"
        );
        drop(b);
        assert!(owner.io.registered_buf().is_some(), "back to its own set");
    });
}

/// A registered buffer may outlive its loop (ARCHITECTURE: a lent buffer goes back "from any
/// thread"; Io's drop "Releases every slot exactly once"): dropping it later is harmless, and it
/// still works as an aligned buffer in another loop.
#[test]
fn registered_buf_outlives_its_loop() {
    each("registered_buf_outlives_its_loop", |case| {
        let f = case.file("f", b"kept");
        let lp = case.lp_with(&registered(case, 2, 4096));
        let mut io = lp.io;
        let a = io.registered_buf().unwrap();
        let b = io.registered_buf().unwrap();
        drop(io);
        drop(a);
        let mut other = case.lp();
        let (n, b) = other.read(f.as_raw_fd(), b, 0);
        assert_eq!((n, &b[..]), (Ok(4), &b"kept"[..]));
        drop(b);
    });
}

/// RegisteredOptions: "buffers: How many buffers (at most 16384 ...)", "buffer_size: a
/// multiple of 4096, at most 1 GiB"; Options: "Every field is checked by Io::new, whichever
/// backend runs"; InitError::InvalidOptions: "the message names the field".
#[test]
fn registered_options_are_checked() {
    each("registered_options_are_checked", |case| {
        for (buffers, size) in [
            (1, 1000),
            (1, 0),
            (1, 4097),
            (16385, 4096),
            (1, (1 << 30) + 4096),
        ] {
            let o = registered(case, buffers, size);
            match Io::<Ctx>::new(&o) {
                Err(InitError::InvalidOptions(msg)) => {
                    assert!(msg.contains("registered"), "names the field: {msg}")
                }
                Err(e) => panic!("({buffers}, {size}): {e}"),
                Ok(_) => panic!("({buffers}, {size}) accepted"),
            }
        }
        for (buffers, size) in [(0, 0), (1, 4096), (2, 1 << 16)] {
            let o = registered(case, buffers, size);
            assert!(Io::<Ctx>::new(&o).is_ok(), "({buffers}, {size})");
        }
        let u = Io::<Ctx>::new(&case.options(4)).unwrap().stats().uring;
        assert!(
            u.is_none_or(|u| !u.registered_buffers),
            "false without any: {u:?}"
        );
    });
}

// ---------------------------------------------------------------------------------------
// Features, statistics, batches
// ---------------------------------------------------------------------------------------

/// UringFeatures::file_opcodes: "How many of the optional file opcodes the kernel runs for the
/// loop (of 8 ...) ... 0 when masked (UringOptions::file_opcodes)"; Stats::uring: "None on
/// the other backends".
#[test]
fn uring_features_report_file_opcodes() {
    each("uring_features_report_file_opcodes", |case| {
        let lp = case.lp();
        let uring = lp.io.stats().uring;
        match case.v {
            Variant::Uring => {
                // READV, WRITEV 5.1; FALLOCATE, STATX 5.6; RENAMEAT, UNLINKAT 5.11; MKDIRAT
                // 5.15; FTRUNCATE 6.9 (UringFeatures::file_opcodes).
                let want = [(5, 1, 2), (5, 6, 4), (5, 11, 6), (5, 15, 7), (6, 9, 8)]
                    .iter()
                    .filter(|(major, minor, _)| kernel_at_least(*major, *minor))
                    .map(|(_, _, n)| *n)
                    .next_back()
                    .unwrap_or(0);
                assert_eq!(uring.map(|u| u.file_opcodes), Some(want));
            }
            Variant::UringMasked => assert_eq!(uring.map(|u| u.file_opcodes), Some(0)),
            _ => assert!(uring.is_none()),
        }
    });
}

/// Stats::ops_submitted/ops_completed count file operations like any other, and Stats::syscalls
/// counts "io_uring_enter on io_uring; on readiness backends every wait, interest change and
/// operation syscall": a batch of file operations is one submission on io_uring (with every
/// opcode), at least one syscall each on epoll and kqueue.
#[test]
fn stats_count_file_operations() {
    each("stats_count_file_operations", |case| {
        let f = case.file("f", b"");
        let mut lp = case.lp_with(&case.options(64));
        let before = lp.io.stats();
        for i in 0..32u64 {
            let buf = vec![i as u8; 16];
            lp.io
                .write(i, f.as_raw_fd(), buf, i * 16, on_file::<Vec<u8>>)
                .unwrap();
        }
        lp.settle();
        let after = lp.io.stats();
        assert_eq!(after.ops_submitted - before.ops_submitted, 32);
        assert_eq!(after.ops_completed - before.ops_completed, 32);
        let syscalls = after.syscalls - before.syscalls;
        match case.v {
            Variant::Uring => assert!(syscalls < 32, "one batch, not a syscall each: {syscalls}"),
            // With the default file worker, the writes' own syscalls are the workers'
            // (`Stats::worker_syscalls`); inline they would be the loop's.
            Variant::Epoll | Variant::KqueueFake => {
                let workers = after.worker_syscalls - before.worker_syscalls;
                assert!(syscalls + workers >= 32, "{syscalls} + {workers}");
            }
            Variant::UringMasked => eprintln!("masked io_uring: {syscalls} syscalls for 32 writes"),
        }
        let got = contents(&case.path("f"));
        let want: Vec<u8> = (0..32u8).flat_map(|i| [i; 16]).collect();
        assert_eq!(got, want);
    });
}

/// Masked io_uring runs each optional file operation "as a syscall in the loop's thread", and
/// Stats::syscalls is documented as counting io_uring_enter only there; ARCHITECTURE says the
/// count is "comparable" with the readiness backends'. This records which it is.
#[test]
fn masked_uring_syscall_count_for_inline_file_operations() {
    each_of("masked_syscalls", &[Variant::UringMasked], |case| {
        let f = case.file("f", b"");
        let fd = f.as_raw_fd();
        let mut lp = case.lp_with(&case.options(64));
        lp.settle();
        let before = lp.io.stats();
        for i in 0..32u64 {
            lp.io.fallocate(i, fd, 0, i * 4096, 4096, on_unit).unwrap();
        }
        lp.settle();
        let after = lp.io.stats();
        let syscalls = after.syscalls - before.syscalls;
        assert_eq!(after.ops_submitted - before.ops_submitted, 32);
        assert_eq!(after.ops_completed - before.ops_completed, 32);
        // Observed: each inline syscall is counted (32 + the enter), which keeps the count
        // "comparable" (ARCHITECTURE), though Stats::syscalls reads "io_uring_enter on
        // io_uring".
        assert!(
            syscalls >= 32,
            "the inline fallocates are counted: {syscalls}"
        );
    });
}

/// UringOptions::sq_entries: "Operations scheduled past it wait in the overflow queue for the
/// next batch": file operations too, including those masked io_uring performs itself ("after
/// checking the SQ has room").
#[test]
fn file_operations_past_the_submission_queue_all_complete() {
    each(
        "file_operations_past_the_submission_queue_all_complete",
        |case| {
            let f = case.file("f", b"");
            let mut o = case.options(64);
            o.uring.sq_entries = 2;
            let mut lp = case.lp_with(&o);
            for i in 0..20u64 {
                let buf = vec![b'a' + i as u8; 3];
                lp.io
                    .write(i, f.as_raw_fd(), buf, i * 3, on_file::<Vec<u8>>)
                    .unwrap();
                lp.io
                    .mkdirat(
                        100 + i,
                        AT_FDCWD,
                        case.cpath(&format!("d{i}")),
                        0o755,
                        on_unit,
                    )
                    .unwrap();
                let stat = case.cpath(".");
                lp.io.statx(200 + i, AT_FDCWD, stat, 0, on_stat).unwrap();
            }
            lp.settle();
            for i in 0..20u64 {
                assert_eq!(Vec::<u8>::take_one(lp.take(i)).0, Ok(3));
                assert_eq!(lp.take(100 + i).unit(), Ok(()));
                assert!(lp.take(200 + i).stat().unwrap().is_dir());
            }
            let want: Vec<u8> = (0..20u8).flat_map(|i| [b'a' + i; 3]).collect();
            assert_eq!(contents(&case.path("f")), want);
            if case.v.is_uring() {
                assert!(lp.io.stats().overflow_parked > 0, "the SQ overflowed");
            }
        },
    );
}

/// A Tag is "handed back to its callback unchanged", for every storage operation.
#[test]
fn tags_come_back_unchanged() {
    each("tags_come_back_unchanged", |case| {
        let f = case.file("f", b"abc");
        let fd = f.as_raw_fd();
        let mut lp = case.lp();
        let io = &mut lp.io;
        let tags = [u64::MAX, 0, 1 << 63, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51];
        io.read(tags[0], fd, Vec::with_capacity(3), 0, on_file::<Vec<u8>>)
            .unwrap();
        io.write(tags[1], fd, b"x".to_vec(), 5, on_file::<Vec<u8>>)
            .unwrap();
        io.read_vectored(
            tags[2],
            fd,
            vec![Vec::with_capacity(1)],
            0,
            0,
            on_files::<Vec<u8>>,
        )
        .unwrap();
        io.write_vectored(tags[3], fd, vec![b"y".to_vec()], 6, 0, on_files::<Vec<u8>>)
            .unwrap();
        io.fsync(tags[4], fd, on_unit).unwrap();
        io.fdatasync(tags[5], fd, on_unit).unwrap();
        io.fallocate(tags[6], fd, 0, 0, 10, on_unit).unwrap();
        io.statx(tags[7], fd, c(""), libc::AT_EMPTY_PATH, on_stat)
            .unwrap();
        io.openat(tags[8], AT_FDCWD, case.cpath("f"), libc::O_RDONLY, 0, on_fd)
            .unwrap();
        io.mkdirat(tags[9], AT_FDCWD, case.cpath("m"), 0o755, on_unit)
            .unwrap();
        let (a, b) = (case.cpath("m"), case.cpath("n"));
        io.renameat(
            tags[10],
            AT_FDCWD,
            case.cpath("nothing"),
            AT_FDCWD,
            b,
            0,
            on_unit,
        )
        .unwrap();
        io.unlinkat(tags[11], AT_FDCWD, case.cpath("none"), 0, on_unit)
            .unwrap();
        io.ftruncate(tags[12], 1 << 20, 0, on_unit).unwrap();
        drop(a);
        lp.settle();
        let mut got: Vec<Tag> = lp.ctx.ev.iter().map(|(t, _)| *t).collect();
        got.sort_unstable();
        let mut want = tags.to_vec();
        want.sort_unstable();
        assert_eq!(got, want, "each tag once");
    });
}

// ---------------------------------------------------------------------------------------
// Cancel, deadlines and drop with file operations
// ---------------------------------------------------------------------------------------

/// Schedules one of several storage operations with a visible effect, under tag 1.
fn schedule_effect(lp: &mut Lp, case: &Case, f: &File, which: usize) -> OpId {
    let io = &mut lp.io;
    let fd = f.as_raw_fd();
    let (victim, renamed) = (case.cpath("victim"), case.cpath("renamed"));
    match which {
        0 => io
            .write(1, fd, b"written".to_vec(), 0, on_file::<Vec<u8>>)
            .map_err(ScheduleError::into_kind),
        1 => io
            .mkdirat(1, AT_FDCWD, case.cpath("made"), 0o755, on_unit)
            .map_err(ScheduleError::into_kind),
        2 => {
            let flags = libc::O_CREAT | libc::O_WRONLY;
            let created = case.cpath("created");
            io.openat(1, AT_FDCWD, created, flags, 0o644, on_fd)
                .map_err(ScheduleError::into_kind)
        }
        3 => io
            .ftruncate(1, fd, 100, on_unit)
            .map_err(ScheduleError::into_kind),
        4 => io
            .fallocate(1, fd, 0, 0, 8192, on_unit)
            .map_err(ScheduleError::into_kind),
        5 => io
            .unlinkat(1, AT_FDCWD, victim, 0, on_unit)
            .map_err(ScheduleError::into_kind),
        6 => io
            .renameat(1, AT_FDCWD, victim, AT_FDCWD, renamed, 0, on_unit)
            .map_err(ScheduleError::into_kind),
        _ => {
            let bufs = vec![b"vec".to_vec()];
            io.write_vectored(1, fd, bufs, 0, 0, on_files::<Vec<u8>>)
                .map_err(ScheduleError::into_kind)
        }
    }
    .unwrap_or_else(|e| panic!("{e:?}"))
}

/// Whether the effect of `schedule_effect(which)` is visible.
fn effect_visible(case: &Case, which: usize) -> bool {
    let len = fs::metadata(case.path("f")).unwrap().len();
    match which {
        0 | 7 => len > 0,
        1 => case.path("made").exists(),
        2 => case.path("created").exists(),
        3 => len == 100,
        4 => len == 8192,
        5 => !case.path("victim").exists(),
        _ => case.path("renamed").exists(),
    }
}

fn result_of(ev: Ev) -> Res<()> {
    match ev {
        Ev::Unit(r) => r,
        Ev::Vec(r, _) | Ev::Vecs(r, _) => r.map(|_| ()),
        Ev::Fd(r) => r.map(|_| ()),
        other => panic!("{other:?}"),
    }
}

/// Io::cancel: "Ok(()) when the target's final callback has not run yet: the target is
/// cancelled, or it completed first and its callback says so"; the target's callback runs
/// exactly once, "with ECANCELED, or with its real result if it completed first". So a storage
/// operation whose callback says ECANCELED left no trace, and one with a result did its work.
/// A second cancel answers EALREADY; a cancel after the callback ran, ENOENT.
#[test]
fn cancel_of_a_storage_operation_is_exact() {
    alike("cancel_of_a_storage_operation_is_exact", |case| {
        let mut answers = Vec::new();
        for which in 0..8 {
            let f = case.file("f", b"");
            fs::write(case.path("victim"), b"v").unwrap();
            let mut lp = case.lp();
            let id = schedule_effect(&mut lp, case, &f, which);
            lp.io.cancel(2, id, on_unit).unwrap();
            lp.io.cancel(3, id, on_unit).unwrap();
            lp.settle();
            let first = lp.take(2).unit();
            let second = lp.take(3).unit();
            let target = result_of(lp.take(1));
            let after = lp.io.cancel(4, id, on_unit).map(|_| lp.done(4).unit());
            let visible = effect_visible(case, which);
            if target == Err(libc::ECANCELED) {
                assert!(!visible, "op {which}: ECANCELED, yet it was performed");
            } else {
                assert!(
                    target.is_ok() && visible,
                    "op {which}: {target:?}, visible {visible}"
                );
            }
            answers.push((first, second, after.ok()));
            for p in ["made", "created", "renamed", "victim"] {
                let _ = fs::remove_dir(case.path(p));
                let _ = fs::remove_file(case.path(p));
            }
        }
        let want = (Ok(()), Err(libc::EALREADY), Some(Err(libc::ENOENT)));
        assert!(answers.iter().all(|a| *a == want), "{answers:?}");
        answers
    });
}

/// Io::set_deadline on a storage operation: "if it has not completed by then, the loop cancels
/// it and its callback gets ETIMEDOUT (or its real result, if it completed first)". A deadline
/// that does not fire leaves the result alone and costs nothing (deadlines_expired stays 0);
/// clear_deadline answers Ok(true) while it is in flight; NotInFlight once it has completed.
#[test]
fn deadlines_on_storage_operations() {
    each("deadlines_on_storage_operations", |case| {
        for which in 0..8 {
            let f = case.file("f", b"");
            fs::write(case.path("victim"), b"v").unwrap();
            let mut lp = case.lp();
            let id = schedule_effect(&mut lp, case, &f, which);
            lp.io.set_deadline(id, 1_000 * MS).unwrap();
            assert_eq!(lp.io.clear_deadline(id), Ok(true));
            assert_eq!(lp.io.clear_deadline(id), Ok(false));
            lp.io.set_deadline(id, 1_000 * MS).unwrap();
            lp.settle();
            assert!(result_of(lp.take(1)).is_ok(), "op {which}");
            assert!(effect_visible(case, which), "op {which}");
            assert_eq!(lp.io.stats().deadlines_expired, 0);
            assert_eq!(lp.io.set_deadline(id, MS), Err(DeadlineError::NotInFlight));
            assert_eq!(lp.io.clear_deadline(id), Err(DeadlineError::NotInFlight));
            // A deadline that may pass before the operation runs: ETIMEDOUT means not done.
            let f = case.file("f", b"");
            for p in ["made", "created", "renamed"] {
                let _ = fs::remove_dir(case.path(p));
                let _ = fs::remove_file(case.path(p));
            }
            fs::write(case.path("victim"), b"v").unwrap();
            let id = schedule_effect(&mut lp, case, &f, which);
            lp.io.set_deadline(id, 0).unwrap();
            lp.settle();
            let r = result_of(lp.take(1));
            let visible = effect_visible(case, which);
            assert!(
                r == Err(libc::ETIMEDOUT) && !visible || r.is_ok() && visible,
                "{which}: {r:?}"
            );
        }
    });
}

/// Runs `f` on a thread of its own and fails if it has not returned within `HANG` (a drop that
/// never returns would otherwise hang the suite).
fn bounded(what: &str, f: impl FnOnce() + Send + 'static) {
    let (tx, rx) = std::sync::mpsc::channel();
    let t = std::thread::spawn(move || {
        f();
        let _ = tx.send(());
    });
    match rx.recv_timeout(HANG) {
        Ok(()) => t.join().unwrap(),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            std::panic::resume_unwind(t.join().unwrap_err())
        }
        Err(_) => panic!("{what} did not return"),
    }
}

/// Descriptors of this process open on `path`.
fn open_on(path: &Path) -> usize {
    let Ok(entries) = fs::read_dir("/proc/self/fd") else {
        return 0;
    };
    entries
        .filter_map(|e| fs::read_link(e.ok()?.path()).ok())
        .filter(|target| target == path)
        .count()
}

/// Schedules one of each storage operation under tags 10.., the buffers of kind `B`.
fn schedule_all(io: &mut Io<Ctx>, dir: &Path, f: &File, reg: Option<AlignedBuf>) {
    let fd = f.as_raw_fd();
    let p = |n: &str| cstr(&dir.join(n));
    let mut a = AlignedBuf::new(4096, 4096).unwrap();
    a.extend_from_slice(b"aligned");
    io.write(10, fd, a, 0, on_file::<AlignedBuf>).unwrap();
    io.read(11, fd, Vec::with_capacity(64), 0, on_file::<Vec<u8>>)
        .unwrap();
    let bufs = vec![b"v".to_vec(), b"w".to_vec()];
    io.write_vectored(12, fd, bufs, 100, libc::RWF_DSYNC, on_files::<Vec<u8>>)
        .unwrap();
    let bufs = vec![AlignedBuf::new(512, 512).unwrap()];
    io.read_vectored(13, fd, bufs, 0, 0, on_files::<AlignedBuf>)
        .unwrap();
    io.fsync(14, fd, on_unit).unwrap();
    io.fdatasync(15, fd, on_unit).unwrap();
    io.fallocate(16, fd, 0, 0, 1 << 16, on_unit).unwrap();
    io.ftruncate(17, fd, 1 << 17, on_unit).unwrap();
    io.statx(18, fd, c(""), libc::AT_EMPTY_PATH, on_stat)
        .unwrap();
    let flags = libc::O_CREAT | libc::O_RDWR;
    io.openat(19, AT_FDCWD, p("created"), flags, 0o644, on_fd)
        .unwrap();
    io.mkdirat(20, AT_FDCWD, p("made"), 0o755, on_unit).unwrap();
    io.renameat(21, AT_FDCWD, p("x"), AT_FDCWD, p("y"), 0, on_unit)
        .unwrap();
    io.unlinkat(22, AT_FDCWD, p("z"), 0, on_unit).unwrap();
    if let Some(r) = reg {
        io.write(23, fd, r, 0, on_file::<AlignedBuf>).unwrap();
    }
}

/// Io's Drop: "Releases every slot exactly once, whatever its state, without running callbacks
/// ... descriptors the kernel created are closed". Dropped before a turn, after one turn, and
/// after the callbacks ran: no callback runs, nothing hangs, and no descriptor of the opened
/// file survives the loop.
#[test]
fn drop_with_storage_operations_in_flight() {
    each("drop_with_storage_operations_in_flight", |case| {
        for turns in 0..3 {
            let dir = case.path(&format!("t{turns}"));
            fs::create_dir_all(&dir).unwrap();
            let f = File::create(dir.join("f")).unwrap();
            let mut o = case.options(32);
            o.registered = RegisteredOptions::new(1, 4096);
            let d = dir.clone();
            bounded("drop", move || {
                let mut io: Io<Ctx> = Io::new(&o).unwrap();
                let mut reg = io.registered_buf().unwrap();
                reg.extend_from_slice(b"registered");
                schedule_all(&mut io, &d, &f, Some(reg));
                let mut ctx = Ctx::default();
                for _ in 0..turns {
                    io.tick(&mut ctx).unwrap();
                }
                let ran = ctx.ev.len();
                drop(io);
                assert_eq!(ctx.ev.len(), ran, "no callback runs in drop");
                drop(ctx);
                assert_eq!(open_on(&d.join("created")), 0, "the opened file was closed");
            });
        }
    });
}

/// Io's Drop: "operations the kernel holds are cancelled and reaped until it has given all of
/// them back": a FIFO open waiting in an io_uring kernel worker, and a read into a registered
/// buffer waiting on a pipe, do not keep the drop waiting; a buffer of the set still lent
/// stays usable after it.
#[test]
fn uring_drop_with_an_open_waiting_in_the_kernel() {
    let variants = [Variant::Uring, Variant::UringMasked];
    each_of(
        "uring_drop_with_operations_in_the_kernel",
        &variants,
        |case| {
            let path = fifo(case, "fifo");
            let mut o = case.options(4);
            o.registered = RegisteredOptions::new(2, 4096);
            let (r, w) = pipe(rustix::pipe::PipeFlags::empty());
            bounded("drop", move || {
                let mut io: Io<Ctx> = Io::new(&o).unwrap();
                let flags = libc::O_WRONLY | libc::O_CREAT;
                io.openat(1, AT_FDCWD, path, flags, 0o600, on_fd).unwrap();
                // A READ_FIXED into a registered buffer the kernel holds while the loop drops.
                let reg = io.registered_buf().unwrap();
                io.read(2, r.as_raw_fd(), reg, 0, on_file::<AlignedBuf>)
                    .unwrap();
                let mut kept = io.registered_buf().unwrap();
                let mut ctx = Ctx::default();
                io.run_for_ns(&mut ctx, 3 * MS).unwrap();
                assert!(ctx.ev.is_empty(), "both wait");
                drop(io);
                rustix::io::write(&w, b"after the drop").unwrap();
                kept.extend_from_slice(b"still usable");
                assert_eq!(&kept[..], b"still usable");
                drop(kept);
                drop(r);
            });
        },
    );
}

/// The vectored forms on a pipe at an explicit offset. Their docs name no backend difference
/// (Io::read's "Backends" section covers read and write only), and masked io_uring must give
/// "the same callback" as the kernel's opcode.
#[test]
fn vectored_on_a_pipe_with_an_offset_is_alike() {
    // As `Io::read_vectored` documents (and `Io::read` for plain reads): io_uring, whether
    // the kernel or the loop performs the operation, ignores an offset on a pipe; epoll and
    // kqueue answer `ESPIPE`. At `u64::MAX` every backend reads and writes the pipe.
    each("vectored_on_a_pipe_with_an_offset", |case| {
        let (r, w) = pipe(rustix::pipe::PipeFlags::empty());
        let mut lp = case.lp();
        let (wn, _) = lp.writev(w.as_raw_fd(), vec![b"ab".to_vec()], 3, 0);
        let (wm, _) = lp.writev(w.as_raw_fd(), vec![b"cd".to_vec()], u64::MAX, 0);
        let (rm, got) = lp.readv(r.as_raw_fd(), vec![Vec::with_capacity(1)], u64::MAX, 0);
        assert_eq!((wm, rm), (Ok(2), Ok(1)), "u64::MAX reads and writes a pipe");
        let (rn, got2) = lp.readv(r.as_raw_fd(), vec![Vec::with_capacity(8)], 3, 0);
        let uring = matches!(case.v, Variant::Uring | Variant::UringMasked);
        let espipe = Err(libc::ESPIPE);
        let expected = if uring {
            (Ok(2), Ok(3))
        } else {
            (espipe, espipe)
        };
        assert_eq!((wn, rn), expected, "{:?}", case.v);
        // What went in: "ab" (where the offset was ignored) then "cd".
        let (first, rest): (&[u8], &[u8]) = if uring { (b"a", b"bcd") } else { (b"c", b"") };
        assert_eq!((&got[0][..], &got2[0][..]), (first, rest), "{:?}", case.v);
    });
}

/// Io::read's "Backends" section, held against masked io_uring: read and write on a pipe at an
/// explicit offset answer as the kernel's opcodes do ("with the same callback").
#[test]
fn masked_uring_pipe_read_write_match_the_kernel_opcodes() {
    let variants = [Variant::Uring, Variant::UringMasked];
    let seen = std::cell::RefCell::new(Vec::new());
    each_of("masked_uring_pipe_read_write", &variants, |case| {
        let (r, w) = pipe(rustix::pipe::PipeFlags::empty());
        let mut lp = case.lp();
        let (wn, _) = lp.write(w.as_raw_fd(), b"ab".to_vec(), 3);
        let (rn, _) = lp.read(r.as_raw_fd(), Vec::with_capacity(8), 3);
        seen.borrow_mut().push((wn, rn));
    });
    let seen = seen.into_inner();
    assert!(seen.windows(2).all(|w| w[0] == w[1]), "{seen:?}");
}

struct Log {
    fd: RawFd,
    tail: u64,
    synced: u32,
}

fn on_written(
    log: &mut Log,
    io: &mut Io<Log>,
    _: Tag,
    (n, _block): (io::Result<usize>, AlignedBuf),
) {
    log.tail += n.expect("write") as u64;
    io.fdatasync(0, log.fd, |log, _, _, synced| {
        synced.expect("fdatasync");
        log.synced += 1;
    })
    .expect("a free slot");
}

/// README, "A taste of storage": two O_DIRECT appends, each made durable by an fdatasync
/// scheduled from the write's callback.
#[test]
fn readme_taste_of_storage() {
    each("readme_taste_of_storage", |case| {
        let Some(f) = direct_file(case, "log", 0) else {
            return;
        };
        let mut io: Io<Log> = Io::new(&case.options(4)).unwrap();
        let mut log = Log {
            fd: f.as_raw_fd(),
            tail: 0,
            synced: 0,
        };
        for record in [&b"one"[..], b"two"] {
            let mut block = AlignedBuf::new(4096, 4096).expect("a valid layout");
            block.extend_from_slice(record);
            block.resize(4096, 0);
            io.write(0, log.fd, block, log.tail, on_written)
                .expect("a free slot");
            io.run_until_idle(&mut log).unwrap();
        }
        assert_eq!((log.tail, log.synced), (8192, 2));
        let bytes = contents(&case.path("log"));
        assert_eq!(
            (&bytes[..3], &bytes[4096..4099]),
            (&b"one"[..], &b"two"[..])
        );
    });
}

/// Edge cases the docs leave to the kernel, which must then answer alike everywhere: offsets
/// past i64::MAX other than u64::MAX, empty writes, vectored operations with nothing to fill
/// (Io::read_vectored's only documented refusal is a full loop, so these are scheduled).
#[test]
fn storage_edge_cases_are_alike() {
    alike("storage_edge_cases_are_alike", |case| {
        let f = case.file("f", b"0123");
        let fd = f.as_raw_fd();
        let mut lp = case.lp();
        let mut got = Vec::new();
        for off in [u64::MAX - 1, 1 << 63, i64::MAX as u64] {
            let (r, _) = lp.read(fd, Vec::with_capacity(4), off);
            let (w, _) = lp.write(fd, b"x".to_vec(), off);
            got.push((r, w));
        }
        let (e, _) = lp.write(fd, Vec::new(), 0);
        let (ea, _) = lp.write(fd, AlignedBuf::new(8, 8).unwrap(), 0);
        let (rv, _) = lp.readv(fd, vec![vec_with(b"full", 4)], 0, 0);
        let (rn, _) = lp.readv(fd, Vec::<Vec<u8>>::new(), 0, 0);
        got.push((e, ea));
        got.push((rv, rn));
        (got, contents(&case.path("f")))
    });
}

/// Buffer ownership: a buffer is handed back "whatever happens (completion, error, cancel ...)".
/// A read waiting on an empty pipe (io_uring: "waits for the data without blocking the loop")
/// that is cancelled, or whose deadline passes, gives its buffer back untouched, registered
/// buffers included.
#[test]
fn uring_cancelled_and_timed_out_reads_give_their_buffers_back() {
    let variants = [Variant::Uring, Variant::UringMasked];
    each_of("uring_cancelled_and_timed_out_reads", &variants, |case| {
        let (r, _w) = pipe(rustix::pipe::PipeFlags::empty());
        let fd = r.as_raw_fd();
        let mut lp = case.lp_with(&registered(case, 1, 4096));
        let mut reg = lp.io.registered_buf().unwrap();
        reg.extend_from_slice(b"reg");
        let a = lp.io.read(1, fd, reg, 0, on_file::<AlignedBuf>).unwrap();
        let v = vec_with(b"vec", 16);
        let b = lp.io.read(2, fd, v, u64::MAX, on_file::<Vec<u8>>).unwrap();
        // Masked io_uring performs a vectored read itself, in the loop's thread, where it would
        // block on the empty pipe: the kernel's READV only.
        let vectored = case.v == Variant::Uring;
        if vectored {
            let bufs = vec![AlignedBuf::new(64, 64).unwrap()];
            let cv = lp.io.read_vectored(3, fd, bufs, 0, 0, on_files).unwrap();
            lp.io.cancel(11, cv, on_unit).unwrap();
        }
        lp.io.run_for_ns(&mut lp.ctx, 2 * MS).unwrap();
        assert!(
            lp.ctx.ev.iter().all(|(t, _)| *t == 3 || *t == 11),
            "{:?}",
            lp.ctx
        );
        lp.io.cancel(10, a, on_unit).unwrap();
        lp.io.set_deadline(b, MS).unwrap();
        lp.settle();
        assert_eq!(lp.take(10).unit(), Ok(()));
        let (n, reg) = AlignedBuf::take_one(lp.take(1));
        let want = (Err(libc::ECANCELED), &b"reg"[..], true);
        assert_eq!((n, &reg[..], reg.is_registered()), want);
        let (n, v) = Vec::<u8>::take_one(lp.take(2));
        let want = (Err(libc::ETIMEDOUT), &b"vec"[..], 16);
        assert_eq!((n, &v[..], v.capacity()), want);
        if vectored {
            assert_eq!(lp.take(11).unit(), Ok(()));
            let (n, bufs) = AlignedBuf::take_many(lp.take(3));
            assert_eq!((n, bufs.len(), bufs[0].len()), (Err(libc::ECANCELED), 1, 0));
        }
        drop(reg);
        assert!(
            lp.io.registered_buf().is_some(),
            "the registered buffer went home"
        );
    });
}

/// Io::cancel: "Cancels have a budget of their own ... so a loop whose every operation slot is
/// in use can still cancel each of its operations" (a file operation here).
#[test]
fn cancel_of_a_file_operation_on_a_full_loop() {
    alike("cancel_of_a_file_operation_on_a_full_loop", |case| {
        let f = case.file("f", b"");
        let mut lp = case.lp_with(&case.options(1));
        let id = lp.io.fsync(1, f.as_raw_fd(), on_unit).unwrap();
        let e = lp.io.fdatasync(2, f.as_raw_fd(), on_unit).unwrap_err();
        assert_eq!(e.kind, ScheduleErrorKind::SlotsExhausted { ops_max: 1 });
        lp.io.cancel(3, id, on_unit).expect("a cancel slot");
        lp.settle();
        let target = lp.take(1).unit();
        assert!(
            matches!(target, Ok(()) | Err(libc::ECANCELED)),
            "{target:?}"
        );
        lp.take(3).unit()
    });
}

fn on_write_panics(_: &mut Ctx, _: &mut Io<Ctx>, t: Tag, _: (io::Result<usize>, Vec<u8>)) {
    panic!("callback {t} panics on purpose");
}

/// Io::tick: "If a callback panics, the panic propagates out of tick ... the loop stays usable:
/// the callbacks of the rest of that turn's completions run on the next turn, none is lost or
/// run twice" (storage callbacks too).
#[test]
fn a_panicking_storage_callback_loses_nothing() {
    each("a_panicking_storage_callback_loses_nothing", |case| {
        let f = case.file("f", b"");
        let mut lp = case.lp();
        lp.io
            .write(1, f.as_raw_fd(), b"a".to_vec(), 0, on_write_panics)
            .unwrap();
        for t in 2..6u64 {
            lp.io
                .write(t, f.as_raw_fd(), b"b".to_vec(), t, on_file::<Vec<u8>>)
                .unwrap();
        }
        lp.io
            .mkdirat(6, AT_FDCWD, case.cpath("m"), 0o755, on_unit)
            .unwrap();
        let mut panics = 0;
        let start = Instant::now();
        while lp.io.in_flight() > 0 {
            assert!(start.elapsed() < HANG, "never completed");
            let r = catch_unwind(AssertUnwindSafe(|| lp.io.run_for_ns(&mut lp.ctx, MS)));
            panics += r.is_err() as u32;
        }
        assert_eq!(panics, 1, "the callback ran once");
        for t in 2..6 {
            assert_eq!(Vec::<u8>::take_one(lp.take(t)).0, Ok(1));
        }
        assert_eq!(lp.take(6).unit(), Ok(()));
        assert!(lp.ctx.ev.is_empty());
        assert_eq!(
            lp.write(f.as_raw_fd(), b"c".to_vec(), 9).0,
            Ok(1),
            "still usable"
        );
    });
}

/// Io::renameat: "Renames ... (renameat2(2))" with `flags`; the docs name RENAME_NOREPLACE and
/// no backend difference on Linux, so renameat2's RENAME_EXCHANGE answers alike everywhere.
#[test]
fn renameat_exchange_is_alike() {
    alike("renameat_exchange_is_alike", |case| {
        fs::write(case.path("a"), b"a").unwrap();
        fs::write(case.path("b"), b"b").unwrap();
        let mut lp = case.lp();
        let exchange = libc::RENAME_EXCHANGE;
        let x = lp.renameat(
            AT_FDCWD,
            case.cpath("a"),
            AT_FDCWD,
            case.cpath("b"),
            exchange,
        );
        (x, contents(&case.path("a")), contents(&case.path("b")))
    });
}

/// Other Linux flags the storage operations hand to their syscalls (`open(2)` flags, RWF_APPEND,
/// fallocate's ZERO_RANGE, statx's sync flags, a sticky directory mode): the docs name no
/// backend difference for them, so each answers alike everywhere.
#[test]
fn linux_flags_pass_through_alike() {
    alike("linux_flags_pass_through_alike", |case| {
        let f = case.file("f", b"0123456789");
        let d = case.dir_fd("d");
        let mut lp = case.lp();
        let tmp = lp.openat(d.as_raw_fd(), c("."), libc::O_TMPFILE | libc::O_RDWR, 0o600);
        let path = lp
            .openat(AT_FDCWD, case.cpath("f"), libc::O_PATH, 0)
            .map(|_| ());
        let bufs = vec![b"+".to_vec()];
        let (app, _) = lp.writev(f.as_raw_fd(), bufs, 0, libc::RWF_APPEND);
        let zero = lp.fallocate(f.as_raw_fd(), libc::FALLOC_FL_ZERO_RANGE, 2, 2);
        let flags = [
            libc::AT_STATX_FORCE_SYNC,
            libc::AT_STATX_DONT_SYNC,
            libc::AT_NO_AUTOMOUNT,
        ];
        let st: Vec<_> = flags
            .iter()
            .map(|&fl| lp.statx(AT_FDCWD, case.cpath("f"), fl).map(|s| s.size))
            .collect();
        let sticky = lp.mkdirat(AT_FDCWD, case.cpath("s"), 0o1777);
        let mode = fs::metadata(case.path("s")).map(|m| m.permissions().mode() & 0o7000);
        let unl = lp.unlinkat(AT_FDCWD, case.cpath("s"), libc::AT_REMOVEDIR | 0x100);
        (
            tmp.map(|_| ()),
            path,
            app,
            zero,
            st,
            sticky,
            mode.ok(),
            unl,
            contents(&case.path("f")),
        )
    });
}

/// Io::read: "Reads into buf's spare capacity (buf[len..capacity])": a spare capacity past
/// 4 GiB (only its first bytes touched) reads the whole small file, not a length cut to 32
/// bits. The same for AlignedBuf and for the vectored form.
#[test]
fn read_into_a_spare_capacity_past_4_gib() {
    each("read_into_a_spare_capacity_past_4_gib", |case| {
        let f = case.file("f", &[b'q'; 100]);
        let mut lp = case.lp();
        let huge = (1usize << 32) + 8;
        let (n, v) = lp.read(f.as_raw_fd(), Vec::with_capacity(huge), 0);
        assert_eq!((n, v.len()), (Ok(100), 100), "Vec");
        drop(v);
        let (n, a) = lp.read(f.as_raw_fd(), AlignedBuf::new(huge, 4096).unwrap(), 0);
        assert_eq!((n, a.len()), (Ok(100), 100), "AlignedBuf");
        drop(a);
        let (n, v) = lp.readv(f.as_raw_fd(), vec![Vec::with_capacity(huge)], 0, 0);
        assert_eq!((n, v[0].len()), (Ok(100), 100), "vectored");
    });
}

/// Io::read_vectored: "At most GATHER_MAX buffers take part ...; buffers without spare capacity
/// take nothing": with the first GATHER_MAX full, nothing is read, on every backend alike; and
/// write_vectored with GATHER_MAX empty buffers first writes nothing.
#[test]
fn gather_max_counts_buffers_not_bytes() {
    alike("gather_max_counts_buffers_not_bytes", |case| {
        let f = case.file("f", b"0123456789");
        let mut lp = case.lp();
        let mut bufs: Vec<Vec<u8>> = (0..GATHER_MAX).map(|_| vec_with(b"x", 1)).collect();
        bufs.push(Vec::with_capacity(4));
        let (n, bufs) = lp.readv(f.as_raw_fd(), bufs, 0, 0);
        let last = bufs[GATHER_MAX].clone();
        let mut out: Vec<Vec<u8>> = (0..GATHER_MAX).map(|_| Vec::new()).collect();
        out.push(b"late".to_vec());
        let (m, _) = lp.writev(f.as_raw_fd(), out, 0, 0);
        assert_eq!((n, m), (Ok(0), Ok(0)), "the 65th buffer takes no part");
        (n, last, m, contents(&case.path("f")))
    });
}

/// Registered buffers at offset u64::MAX: "offset u64::MAX reads [writes] at the file's
/// current position and advances it, on every backend" (READ_FIXED/WRITE_FIXED on io_uring).
#[test]
fn registered_bufs_at_the_file_position() {
    each("registered_bufs_at_the_file_position", |case| {
        let f = case.file("f", b"0123456789");
        (&f).seek(SeekFrom::Start(2)).unwrap();
        let mut lp = case.lp_with(&registered(case, 2, 4096));
        let r = lp.io.registered_buf().unwrap();
        let (n, r) = lp.read(f.as_raw_fd(), r, u64::MAX);
        assert_eq!((n, &r[..], position(&f)), (Ok(8), &b"23456789"[..], 10));
        let mut w = lp.io.registered_buf().unwrap();
        w.extend_from_slice(b"ab");
        (&f).seek(SeekFrom::Start(4)).unwrap();
        let (n, _) = lp.write(f.as_raw_fd(), w, u64::MAX);
        assert_eq!((n, position(&f)), (Ok(2), 6));
        assert_eq!(contents(&case.path("f")), b"0123ab6789");
    });
}

/// ARCHITECTURE, Cancellation: "a target parked in the overflow queue ... is unlinked and
/// completed with ECANCELED without the kernel"; masked io_uring performs a file operation
/// "when it is pushed ... after checking the SQ has room". Either way a cancelled storage
/// operation whose callback says ECANCELED left no trace, and one with a result did its work.
#[test]
fn cancel_of_storage_operations_parked_past_the_submission_queue() {
    alike("cancel_of_storage_operations_parked", |case| {
        let mut o = case.options(16);
        o.uring.sq_entries = 1;
        let mut lp = case.lp_with(&o);
        let ids: Vec<OpId> = (0..6u64)
            .map(|i| {
                let p = case.cpath(&format!("d{i}"));
                lp.io.mkdirat(i, AT_FDCWD, p, 0o755, on_unit).unwrap()
            })
            .collect();
        for (i, id) in ids.iter().enumerate() {
            lp.io.cancel(100 + i as u64, *id, on_unit).unwrap();
        }
        lp.settle();
        let mut answers = Vec::new();
        for i in 0..6u64 {
            let r = lp.take(i).unit();
            let made = case.path(&format!("d{i}")).exists();
            assert!(
                r == Err(libc::ECANCELED) && !made || r.is_ok() && made,
                "d{i}: {r:?}"
            );
            answers.push(lp.take(100 + i).unit());
        }
        answers
    });
}

/// Paths are handed to the kernel as they are: empty, non-UTF-8, too long, "." and "..": every
/// path operation answers alike everywhere (the docs name no difference).
#[test]
fn path_edge_cases_are_alike() {
    alike("path_edge_cases_are_alike", |case| {
        let d = case.dir_fd("d");
        let dfd = d.as_raw_fd();
        let mut lp = case.lp();
        let odd = CString::new(&b"\xff\xfe-odd"[..]).unwrap();
        let long = CString::new(vec![b'n'; 300]).unwrap();
        let deep = CString::new(vec![b'a'; 5000]).unwrap();
        let mut got = Vec::new();
        for p in [c(""), c("."), c(".."), odd.clone(), long, deep] {
            let m = lp.mkdirat(dfd, p.clone(), 0o755);
            let s = lp.statx(dfd, p.clone(), 0).map(|s| s.is_dir());
            let o = lp.openat(dfd, p.clone(), libc::O_RDONLY, 0).map(|_| ());
            let r = lp.renameat(dfd, p.clone(), dfd, c("moved"), RENAME_NOREPLACE);
            let r2 = lp.renameat(dfd, c("moved"), dfd, p.clone(), 0);
            let u = lp.unlinkat(dfd, p.clone(), libc::AT_REMOVEDIR);
            got.push((m, s, o, r, r2, u));
        }
        assert_eq!(
            got[3],
            (Ok(()), Ok(true), Ok(()), Ok(()), Ok(()), Ok(())),
            "non-UTF-8"
        );
        got
    });
}

/// examples/files.rs's flow ("opens, writes, flushes, reads and closes a file"), through the
/// loop only: the close releases the descriptor openat created.
#[test]
fn open_write_flush_read_close() {
    each("open_write_flush_read_close", |case| {
        let mut lp = case.lp();
        let flags = libc::O_CREAT | libc::O_RDWR | libc::O_TRUNC;
        let fd = lp.openat(AT_FDCWD, case.cpath("f"), flags, 0o600).unwrap();
        let raw = fd.as_raw_fd();
        assert_eq!(open_on(&case.path("f")), 1);
        assert_eq!(lp.write(raw, b"hello, disk".to_vec(), 0).0, Ok(11));
        assert_eq!(lp.fsync(raw), Ok(()));
        let (n, got) = lp.read(raw, Vec::with_capacity(64), 7);
        assert_eq!((n, &got[..]), (Ok(4), &b"disk"[..]));
        assert_eq!(lp.ftruncate(raw, 5), Ok(()));
        let st = lp.statx(raw, c(""), libc::AT_EMPTY_PATH).unwrap();
        assert_eq!((st.size, st.mode & 0o777), (5, 0o600));
        lp.io.close(9, fd, on_unit).unwrap();
        assert_eq!(lp.done(9).unit(), Ok(()));
        assert_eq!(open_on(&case.path("f")), 0, "closed");
        assert_eq!(contents(&case.path("f")), b"hello");
    });
}

/// Options::new's documented defaults for the storage fields: "registered: RegisteredOptions
/// { buffers: 0, buffer_size: 0 }: no registered buffers"; UringOptions::file_opcodes, whose
/// default Options::new does not list, is on (every opcode the kernel has is used).
#[test]
fn options_new_storage_defaults() {
    let o = Options::new(4);
    assert_eq!(o.registered, RegisteredOptions::new(0, 0));
    assert!(o.uring.file_opcodes, "file opcodes used by default");
}

/// Options: "Every field is checked by Io::new, whichever backend runs": the same registered
/// options are accepted or refused alike, the kernel's limit of 16384 buffers included.
#[test]
fn registered_options_are_checked_alike() {
    alike("registered_options_are_checked_alike", |case| {
        let sets = [
            (0, 1000),
            (0, 4096),
            (16384, 4096),
            (16384, 4095),
            (2, 1 << 20),
        ];
        sets.map(|(buffers, size)| {
            let o = registered(case, buffers, size);
            match Io::<Ctx>::new(&o) {
                Ok(mut io) => {
                    let lent = (0..buffers.min(3)).filter_map(|_| io.registered_buf());
                    Ok(lent.map(|b| b.capacity()).collect::<Vec<_>>())
                }
                Err(InitError::InvalidOptions(m)) => Err(m.contains("registered")),
                Err(e) => panic!("{e}"),
            }
        })
    });
}

/// Io::set_deadline: "NotCancellable for a close or a cancel" (a close of a file opened by the
/// loop), and a cancel of the close answers EALREADY ("A close cannot be cancelled").
#[test]
fn close_of_a_file_takes_no_deadline() {
    each("close_of_a_file_takes_no_deadline", |case| {
        let mut lp = case.lp();
        let flags = libc::O_CREAT | libc::O_RDWR;
        let fd = lp.openat(AT_FDCWD, case.cpath("f"), flags, 0o600).unwrap();
        let id = lp.io.close(1, fd, on_unit).unwrap();
        assert_eq!(
            lp.io.set_deadline(id, MS),
            Err(DeadlineError::NotCancellable)
        );
        lp.io.cancel(2, id, on_unit).unwrap();
        lp.settle();
        assert_eq!(
            (lp.take(1).unit(), lp.take(2).unit()),
            (Ok(()), Err(libc::EALREADY))
        );
        assert_eq!(open_on(&case.path("f")), 0);
    });
}

/// A vectored read on an empty non-blocking pipe, by who performs it (Portability: "A file
/// operation whose opcode the kernel lacks ... runs as a syscall in the loop's thread"; on
/// epoll and kqueue file operations "run inline"): io_uring's READV waits for the data like its
/// read, the others answer EAGAIN at once as Io::read does there.
#[test]
fn read_vectored_of_empty_nonblocking_pipe() {
    each("read_vectored_of_empty_nonblocking_pipe", |case| {
        let (r, w) = pipe(rustix::pipe::PipeFlags::NONBLOCK);
        let mut lp = case.lp();
        let bufs = vec![Vec::with_capacity(8)];
        let cb = on_files::<Vec<u8>>;
        lp.io
            .read_vectored(1, r.as_raw_fd(), bufs, u64::MAX, 0, cb)
            .unwrap();
        lp.io.run_for_ns(&mut lp.ctx, 2 * MS).unwrap();
        if case.v == Variant::Uring {
            assert!(
                lp.ctx.ev.is_empty(),
                "READV waits for the data: {:?}",
                lp.ctx
            );
            rustix::io::write(&w, b"late").unwrap();
            let (n, bufs) = Vec::<u8>::take_many(lp.done(1));
            assert_eq!((n, &bufs[0][..]), (Ok(4), &b"late"[..]));
        } else {
            let (n, bufs) = Vec::<u8>::take_many(lp.done(1));
            assert_eq!((n, bufs[0].len()), (Err(libc::EAGAIN), 0));
        }
    });
}

// ---------------------------------------------------------------------------------------
// A seeded mix: many storage operations, cancels and deadlines on a small loop
// ---------------------------------------------------------------------------------------

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Schedules operation `i` of the mix (a write of a non-zero byte at offset `i`, or a mkdirat of
/// `d{i}`), with `SlotsExhausted` answered by running the loop and trying again.
fn mix_schedule(lp: &mut Lp, case: &Case, f: &File, i: u64) -> OpId {
    loop {
        let r = if i.is_multiple_of(2) {
            let buf = vec![(i % 251) as u8 + 1];
            let cb = on_file::<Vec<u8>>;
            lp.io
                .write(i, f.as_raw_fd(), buf, i, cb)
                .map_err(|e| e.kind)
        } else {
            let p = case.cpath(&format!("d{i}"));
            lp.io
                .mkdirat(i, AT_FDCWD, p, 0o755, on_unit)
                .map_err(|e| e.kind)
        };
        match r {
            Ok(id) => return id,
            Err(ScheduleErrorKind::SlotsExhausted { .. }) => {
                lp.io.run_for_ns(&mut lp.ctx, 0).unwrap();
            }
            Err(e) => panic!("{e:?}"),
        }
    }
}

/// Io::cancel and Io::set_deadline over a seeded mix of 400 writes and mkdirats on a loop of 4
/// slots and a 2-entry submission queue, the loop turned at random: every operation's callback
/// runs exactly once, and one that ended ECANCELED or ETIMEDOUT left no trace while one with a
/// result did its work.
#[test]
fn seeded_mix_of_storage_operations_cancels_and_deadlines() {
    each("seeded_mix", |case| {
        let f = case.file("f", b"");
        let mut o = case.options(4);
        o.uring.sq_entries = 2;
        let mut lp = case.lp_with(&o);
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut cancel_tag = 10_000;
        for i in 0..400u64 {
            let id = mix_schedule(&mut lp, case, &f, i);
            match rng.below(4) {
                0 => {
                    let cancelled = lp.io.cancel(cancel_tag, id, on_unit).is_ok();
                    cancel_tag += u64::from(cancelled);
                }
                1 => lp.io.set_deadline(id, rng.below(2) * 100_000).unwrap(),
                _ => {}
            }
            if rng.below(3) == 0 {
                lp.io.run_for_ns(&mut lp.ctx, 0).unwrap();
            }
        }
        lp.settle();
        let bytes = contents(&case.path("f"));
        for i in 0..400u64 {
            let r = result_of(lp.take(i));
            let done = if i % 2 == 0 {
                bytes.get(i as usize) == Some(&((i % 251) as u8 + 1))
            } else {
                case.path(&format!("d{i}")).exists()
            };
            let stopped = matches!(r, Err(libc::ECANCELED) | Err(libc::ETIMEDOUT));
            assert!(
                stopped && !done || r.is_ok() && done,
                "op {i}: {r:?}, done {done}"
            );
        }
        for t in 10_000..cancel_tag {
            assert_eq!(lp.take(t).unit(), Ok(()), "cancel {t}");
        }
        assert!(
            lp.ctx.ev.is_empty(),
            "no stray callback: {:?}",
            lp.ctx.ev.len()
        );
    });
}

/// Registered buffers dropped on other threads while the loop keeps lending: "dropping one
/// returns it to the set (a mutex, so from any thread)"; every buffer comes home.
#[test]
fn registered_bufs_returned_concurrently() {
    each("registered_bufs_returned_concurrently", |case| {
        let mut lp = case.lp_with(&registered(case, 4, 4096));
        let (tx, rx) = std::sync::mpsc::channel::<AlignedBuf>();
        let dropper = std::thread::spawn(move || {
            for b in rx {
                drop(b);
            }
        });
        let mut lent = 0;
        let start = Instant::now();
        while lent < 2000 {
            assert!(
                start.elapsed() < HANG,
                "buffers stopped coming home after {lent}"
            );
            if let Some(b) = lp.io.registered_buf() {
                assert!(b.is_empty() && b.is_registered());
                tx.send(b).unwrap();
                lent += 1;
            } else {
                std::thread::yield_now();
            }
        }
        drop(tx);
        dropper.join().unwrap();
        let all: Vec<AlignedBuf> = (0..4).filter_map(|_| lp.io.registered_buf()).collect();
        assert_eq!(all.len(), 4, "every buffer came home");
    });
}

// ---------------------------------------------------------------------------------------
// Allocations: "Every allocation the loop makes happens here" (Io::new)
// ---------------------------------------------------------------------------------------

/// Counts this thread's allocations, so that a test can check what the loop allocates while
/// other tests run on other threads.
#[allow(unsafe_code)]
mod counting {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    thread_local! {
        static COUNT: Cell<u64> = const { Cell::new(0) };
    }

    pub struct Counting;

    fn bump() {
        let _ = COUNT.try_with(|c| c.set(c.get() + 1));
    }

    pub fn count() -> u64 {
        COUNT.with(|c| c.get())
    }

    // SAFETY: every method forwards to `System` with the caller's arguments, so `System`'s
    // guarantees are this allocator's; counting touches only a thread-local `Cell`, which
    // never allocates (a `const` initialiser and no destructor).
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            bump();
            // SAFETY: the caller upholds `alloc`'s contract, passed on unchanged.
            unsafe { System.alloc(layout) }
        }

        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            bump();
            // SAFETY: as for `alloc`.
            unsafe { System.alloc_zeroed(layout) }
        }

        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            bump();
            // SAFETY: `ptr` and `layout` came from this allocator, that is from `System`.
            unsafe { System.realloc(ptr, layout, new_size) }
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            // SAFETY: `ptr` and `layout` came from this allocator, that is from `System`.
            unsafe { System.dealloc(ptr, layout) }
        }
    }
}

#[global_allocator]
static ALLOCATOR: counting::Counting = counting::Counting;

/// The values one round of `storage_round` consumes, made before it is measured.
struct RoundValues {
    vecs: Vec<Vec<u8>>,
    aligned: Vec<AlignedBuf>,
    lists: Vec<Vec<Vec<u8>>>,
    paths: Vec<CString>,
}

fn round_values(case: &Case, round: u32) -> RoundValues {
    RoundValues {
        vecs: vec![b"write".to_vec(), Vec::with_capacity(16)],
        aligned: vec![AlignedBuf::new(4096, 4096).unwrap()],
        lists: vec![
            vec![b"a".to_vec(), b"b".to_vec()],
            vec![Vec::with_capacity(4), Vec::with_capacity(4)],
        ],
        paths: ["o", "m", "m", "r", "r"]
            .iter()
            .map(|p| case.cpath(&format!("{p}{round}")))
            .collect(),
    }
}

/// One of each storage operation but statx, on values made beforehand; settled.
fn storage_round(lp: &mut Lp, fd: RawFd, v: RoundValues) {
    let RoundValues {
        mut vecs,
        mut aligned,
        mut lists,
        mut paths,
    } = v;
    let io = &mut lp.io;
    let fcb = on_file::<Vec<u8>>;
    io.write(1, fd, vecs.remove(0), 0, fcb).unwrap();
    io.read(2, fd, vecs.remove(0), 0, fcb).unwrap();
    io.read(3, fd, aligned.remove(0), 0, on_file::<AlignedBuf>)
        .unwrap();
    let vcb = on_files::<Vec<u8>>;
    io.write_vectored(4, fd, lists.remove(0), 8, 0, vcb)
        .unwrap();
    io.read_vectored(5, fd, lists.remove(0), 0, 0, vcb).unwrap();
    io.fsync(6, fd, on_unit).unwrap();
    io.fdatasync(7, fd, on_unit).unwrap();
    io.fallocate(8, fd, 0, 0, 4096, on_unit).unwrap();
    io.ftruncate(9, fd, 100, on_unit).unwrap();
    let flags = libc::O_CREAT | libc::O_RDWR;
    io.openat(10, AT_FDCWD, paths.remove(0), flags, 0o600, on_fd)
        .unwrap();
    io.mkdirat(11, AT_FDCWD, paths.remove(0), 0o755, on_unit)
        .unwrap();
    lp.settle();
    let (old, new) = (paths.remove(0), paths.remove(0));
    lp.io
        .renameat(12, AT_FDCWD, old, AT_FDCWD, new, 0, on_unit)
        .unwrap();
    lp.settle();
    lp.io
        .unlinkat(13, AT_FDCWD, paths.remove(0), libc::AT_REMOVEDIR, on_unit)
        .unwrap();
    lp.settle();
}

/// Io::new: "Every allocation the loop makes happens here", with the exceptions the docs name:
/// each statx "allocates the kernel's answer (one box, freed before the callback runs)", and
/// on io_uring a vectored operation's iovecs "live in a per-slot box made the first time that
/// slot needs it" (ARCHITECTURE). Once every slot has been used, a round of every other storage
/// operation allocates nothing in this thread, and a statx allocates one box.
#[test]
fn storage_operations_allocate_nothing_after_warm_up() {
    each("allocate_nothing_after_warm_up", |case| {
        let f = case.file("f", b"0123456789");
        let mut lp = case.lp_with(&case.options(16));
        lp.ctx.ev.reserve(64);
        for round in 0..3 {
            let v = round_values(case, round);
            storage_round(&mut lp, f.as_raw_fd(), v);
            lp.ctx.ev.clear();
        }
        warm_every_slot(&mut lp, &f);
        let v = round_values(case, 3);
        let before = counting::count();
        storage_round(&mut lp, f.as_raw_fd(), v);
        let allocs = counting::count() - before;
        lp.ctx.ev.clear();
        assert_eq!(
            allocs, 0,
            "allocations in a warm round of storage operations"
        );
        let path = case.cpath("f");
        let before = counting::count();
        lp.io.statx(1, AT_FDCWD, path, 0, on_stat).unwrap();
        lp.settle();
        let allocs = counting::count() - before;
        assert!(lp.take(1).stat().is_ok());
        assert!(allocs <= 1, "a statx allocates one box: {allocs}");
    });
}

/// Every slot's vectored box made: 16 vectored reads, then 16 vectored writes, in flight at
/// once, twice.
fn warm_every_slot(lp: &mut Lp, f: &File) {
    let cb = on_files::<Vec<u8>>;
    for _ in 0..2 {
        for t in 0..16 {
            let bufs = vec![Vec::with_capacity(1), Vec::with_capacity(1)];
            lp.io
                .read_vectored(t, f.as_raw_fd(), bufs, 0, 0, cb)
                .unwrap();
        }
        lp.settle();
        lp.ctx.ev.clear();
        for t in 0..16 {
            let bufs = vec![b"0".to_vec(), b"1".to_vec()];
            lp.io
                .write_vectored(t, f.as_raw_fd(), bufs, 0, 0, cb)
                .unwrap();
        }
        lp.settle();
        lp.ctx.ev.clear();
    }
}

/// Io's Drop: "parked operations are dropped (buffers freed ...)": on io_uring, storage
/// operations waiting in the overflow queue for room in the submission queue are never
/// performed by the drop (masked io_uring performs one "when it is pushed", so only what
/// reached the queue can have run).
#[test]
fn uring_drop_never_performs_parked_storage_operations() {
    let variants = [Variant::Uring, Variant::UringMasked];
    each_of("uring_drop_never_performs_parked", &variants, |case| {
        let mut o = case.options(16);
        o.uring.sq_entries = 1;
        let mut io: Io<Ctx> = Io::new(&o).unwrap();
        for i in 0..6u64 {
            let p = case.cpath(&format!("d{i}"));
            io.mkdirat(i, AT_FDCWD, p, 0o755, on_unit).unwrap();
        }
        assert!(io.stats().overflow_parked >= 5, "{:?}", io.stats());
        drop(io);
        for i in 1..6 {
            assert!(
                !case.path(&format!("d{i}")).exists(),
                "parked d{i} was performed"
            );
        }
    });
}

/// Many storage operations of different kinds in one batch (on masked io_uring the optional
/// ones performed by the loop, the rest by the kernel): each callback gets its own operation's
/// result, matched by its tag.
#[test]
fn results_reach_their_own_callbacks_in_a_mixed_batch() {
    each("results_reach_their_own_callbacks", |case| {
        let files: Vec<File> = (0..12u64)
            .map(|i| {
                case.file(
                    &format!("f{i}"),
                    &vec![b'a' + i as u8; 100 * i as usize + 1],
                )
            })
            .collect();
        let mut lp = case.lp_with(&case.options(64));
        for (i, f) in files.iter().enumerate() {
            let (i, fd) = (i as u64, f.as_raw_fd());
            let cb = on_file::<Vec<u8>>;
            lp.io
                .statx(i, fd, c(""), libc::AT_EMPTY_PATH, on_stat)
                .unwrap();
            lp.io
                .read(100 + i, fd, Vec::with_capacity(1000), 0, cb)
                .unwrap();
            let bufs = vec![Vec::with_capacity(2)];
            let vcb = on_files::<Vec<u8>>;
            lp.io
                .read_vectored(200 + i, fd, bufs, i * 100, 0, vcb)
                .unwrap();
            let missing = case.cpath(&format!("nothing{i}"));
            lp.io
                .unlinkat(300 + i, AT_FDCWD, missing, 0, on_unit)
                .unwrap();
            lp.io.fsync(400 + i, fd, on_unit).unwrap();
        }
        lp.settle();
        for i in 0..12u64 {
            let want = 100 * i as usize + 1;
            assert_eq!(lp.take(i).stat().unwrap().size, want as u64, "statx {i}");
            let (n, buf) = Vec::<u8>::take_one(lp.take(100 + i));
            assert_eq!(
                (n, buf[0]),
                (Ok(want.min(1000)), b'a' + i as u8),
                "read {i}"
            );
            let (n, bufs) = Vec::<u8>::take_many(lp.take(200 + i));
            assert_eq!(
                (n, bufs[0][0]),
                (Ok(1), b'a' + i as u8),
                "read_vectored {i}"
            );
            assert_eq!(lp.take(300 + i).unit(), Err(libc::ENOENT), "unlinkat {i}");
            assert_eq!(lp.take(400 + i).unit(), Ok(()), "fsync {i}");
        }
    });
}

/// The context of a chain of storage operations, each scheduled by the callback before it.
#[derive(Default)]
struct Chain {
    fd: RawFd,
    dir: PathBuf,
    step: u64,
    seen: Vec<(u64, Res<u64>)>,
}

fn chain_next(ch: &mut Chain, io: &mut Io<Chain>) {
    let s = ch.step;
    ch.step += 1;
    if s == 240 {
        return;
    }
    let r = match s % 4 {
        0 => io.ftruncate(s, ch.fd, s, chain_unit).map_err(|e| e.kind),
        1 => io
            .statx(s, ch.fd, c(""), libc::AT_EMPTY_PATH, chain_stat)
            .map_err(|e| e.kind),
        2 => io
            .mkdirat(
                s,
                AT_FDCWD,
                cstr(&ch.dir.join(s.to_string())),
                0o755,
                chain_unit,
            )
            .map_err(|e| e.kind),
        _ => io
            .fallocate(s, ch.fd, 0, 0, s + 1, chain_unit)
            .map_err(|e| e.kind),
    };
    r.expect("the slot just freed");
}

fn chain_unit(ch: &mut Chain, io: &mut Io<Chain>, t: Tag, r: io::Result<()>) {
    ch.seen.push((t, errno(r).map(|()| 0)));
    chain_next(ch, io);
}

fn chain_stat(ch: &mut Chain, io: &mut Io<Chain>, t: Tag, r: io::Result<FileStat>) {
    ch.seen.push((t, errno(r).map(|st| st.size)));
    chain_next(ch, io);
}

/// Io's Callbacks: "A callback may schedule operations": a chain of 240 storage operations of
/// four kinds on a loop of one slot, each scheduled by the callback before it in the slot that
/// callback's operation freed; every link sees the ones before it.
#[test]
fn storage_operations_chained_from_callbacks() {
    each("storage_operations_chained_from_callbacks", |case| {
        let f = case.file("f", b"");
        let mut io: Io<Chain> = Io::new(&case.options(1)).unwrap();
        let mut ch = Chain {
            fd: f.as_raw_fd(),
            dir: case.dir.clone(),
            ..Chain::default()
        };
        chain_next(&mut ch, &mut io);
        let start = Instant::now();
        while io.in_flight() > 0 {
            assert!(start.elapsed() < HANG, "the chain stalled at {}", ch.step);
            io.run_for_ns(&mut ch, MS).unwrap();
        }
        assert_eq!(ch.seen.len(), 240);
        for (i, (t, r)) in ch.seen.iter().enumerate() {
            let i = i as u64;
            let want = if i % 4 == 1 { Ok(i - 1) } else { Ok(0) };
            assert_eq!(
                (*t, *r),
                (i, want),
                "link {i} (statx sees the truncate before it)"
            );
        }
    });
}

/// Io's Descriptors: "If a program does close one early (a bug), the loop still answers every
/// operation exactly once when it is cancelled, and never hangs on cancel or drop ... on
/// io_uring the kernel holds the file until the pending operations finish or are cancelled":
/// a read waiting on a pipe whose descriptor is closed under it.
#[test]
fn uring_read_on_a_descriptor_closed_under_it() {
    let variants = [Variant::Uring, Variant::UringMasked];
    each_of(
        "uring_read_on_a_descriptor_closed_under_it",
        &variants,
        |case| {
            let (r, _w) = pipe(rustix::pipe::PipeFlags::empty());
            let mut lp = case.lp();
            let mut buf = AlignedBuf::new(64, 64).unwrap();
            buf.extend_from_slice(b"kept");
            let id = lp
                .io
                .read(1, r.as_raw_fd(), buf, 0, on_file::<AlignedBuf>)
                .unwrap();
            lp.io.run_for_ns(&mut lp.ctx, MS).unwrap();
            drop(r);
            lp.io.run_for_ns(&mut lp.ctx, MS).unwrap();
            assert!(
                lp.ctx.ev.is_empty(),
                "the kernel holds the pipe: {:?}",
                lp.ctx
            );
            lp.io.cancel(2, id, on_unit).unwrap();
            lp.settle();
            assert_eq!(lp.take(2).unit(), Ok(()));
            let (n, buf) = AlignedBuf::take_one(lp.take(1));
            assert_eq!((n, &buf[..]), (Err(libc::ECANCELED), &b"kept"[..]));
        },
    );
}

/// AlignedBuf: "a read fills the spare capacity buf[len()..capacity()]": never more, even when
/// the capacity is not a multiple of the alignment (an allocation rounded up to it must not
/// widen the read), for read and read_vectored.
#[test]
fn reads_stop_at_the_capacity_asked_for() {
    each("reads_stop_at_the_capacity_asked_for", |case| {
        let f = case.file("f", &[b'r'; 20000]);
        let mut lp = case.lp();
        for (cap, align) in [(4097, 4096), (1, 4096), (100, 64), (5000, 512)] {
            let (n, b) = lp.read(f.as_raw_fd(), AlignedBuf::new(cap, align).unwrap(), 0);
            assert_eq!(
                (n, b.len(), b.capacity()),
                (Ok(cap), cap, cap),
                "{cap} {align}"
            );
            let mut z = AlignedBuf::zeroed(cap, align).unwrap();
            z.truncate(cap / 2);
            let (n, z) = lp.read(f.as_raw_fd(), z, 0);
            assert_eq!(
                (n, z.len()),
                (Ok(cap - cap / 2), cap),
                "zeroed {cap} {align}"
            );
            let bufs = vec![
                AlignedBuf::new(cap, align).unwrap(),
                AlignedBuf::new(cap, align).unwrap(),
            ];
            let (n, bufs) = lp.readv(f.as_raw_fd(), bufs, 0, 0);
            assert_eq!((n, bufs[0].len(), bufs[1].len()), (Ok(2 * cap), cap, cap));
        }
        let mut v = Vec::with_capacity(10);
        v.extend_from_slice(b"123");
        let cap = v.capacity();
        let (n, v) = lp.read(f.as_raw_fd(), v, 0);
        assert_eq!(
            (n, v.len()),
            (Ok(cap - 3), cap),
            "a Vec's spare capacity exactly"
        );
    });
}
