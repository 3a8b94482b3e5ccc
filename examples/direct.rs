//! Direct I/O on the loop: replace a file atomically, bypassing the page cache.
//!
//! ```text
//! cargo run -p examples --example direct             # in ./target, removed after
//! cargo run -p examples --example direct -- /data    # in /data, kept
//! ```
//!
//! The steps every storage engine takes to replace a file so that a crash leaves the old one
//! or the new one, never a mix: write a temporary file, flush it (`fdatasync`), rename it over
//! the old name, then flush the directory, which is what makes the rename survive a crash.
//! The write and the read back use `O_DIRECT` with an [`AlignedBuf`]: the kernel moves the
//! bytes between the device and the buffer, and asks that address, offset and length be
//! multiples of the device's block size, which `statx` reports. A file system without
//! `O_DIRECT` (tmpfs before Linux 6.6) refuses the open with `EINVAL`: pick a directory on a
//! disk.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::process::ExitCode;

use dispatch_loop::{AlignedBuf, FileStat, Io, Options, Tag, AT_FDCWD};

const RECORD: &[u8] = b"replaced atomically, with direct I/O\n";

/// What the last step's callback got.
#[derive(Default)]
struct Got {
    fd: Option<io::Result<OwnedFd>>,
    unit: Option<io::Result<()>>,
    stat: Option<io::Result<FileStat>>,
    buf: Option<(io::Result<usize>, AlignedBuf)>,
}

fn on_fd(got: &mut Got, _: &mut Io<Got>, _: Tag, result: io::Result<OwnedFd>) {
    got.fd = Some(result);
}

fn on_unit(got: &mut Got, _: &mut Io<Got>, _: Tag, result: io::Result<()>) {
    got.unit = Some(result);
}

fn on_stat(got: &mut Got, _: &mut Io<Got>, _: Tag, result: io::Result<FileStat>) {
    got.stat = Some(result);
}

fn on_buf(got: &mut Got, _: &mut Io<Got>, _: Tag, result: (io::Result<usize>, AlignedBuf)) {
    got.buf = Some(result);
}

/// Runs the loop until the step scheduled has completed; what its callback got.
fn step(io: &mut Io<Got>) -> io::Result<Got> {
    let mut got = Got::default();
    io.run_until_idle(&mut got)?;
    Ok(got)
}

fn path(dir: &str, name: &str) -> CString {
    CString::new(format!("{dir}/{name}")).expect("no NUL in the path")
}

fn open(io: &mut Io<Got>, path: CString, flags: i32) -> io::Result<OwnedFd> {
    io.openat(0, AT_FDCWD, path, flags, 0o644, on_fd)
        .expect("a free slot");
    step(io)?.fd.expect("the open's callback")
}

fn unit(io: &mut Io<Got>) -> io::Result<()> {
    step(io)?.unit.expect("the step's callback")
}

/// The block size direct I/O needs on `fd`'s file system: what statx reports, else 4096
/// (a multiple of every logical block size in use).
fn block_size(io: &mut Io<Got>, fd: RawFd) -> io::Result<usize> {
    let empty = CString::default();
    io.statx(0, fd, empty, libc::AT_EMPTY_PATH, on_stat)
        .expect("a free slot");
    let stat = step(io)?.stat.expect("the statx's callback")?;
    let reported = stat.dio_offset_align.max(stat.dio_mem_align) as usize;
    Ok(if reported == 0 { 4096 } else { reported })
}

/// Writes `RECORD` (padded to one block) to `dir/data.tmp`, flushes it, and renames it over
/// `dir/data`; then flushes `dir`, which makes the rename durable.
fn replace(io: &mut Io<Got>, dir: &str) -> io::Result<usize> {
    let flags = libc::O_CREAT | libc::O_WRONLY | libc::O_TRUNC | libc::O_DIRECT;
    let file = open(io, path(dir, "data.tmp"), flags)?;
    let block = block_size(io, file.as_raw_fd())?;
    let mut buf = AlignedBuf::new(block, block)?;
    buf.extend_from_slice(RECORD);
    buf.resize(block, 0);
    io.write(0, file.as_raw_fd(), buf, 0, on_buf)
        .expect("a free slot");
    let (written, _) = step(io)?.buf.expect("the write's callback");
    assert_eq!(
        written?, block,
        "a direct write of one block is never short here"
    );
    io.fdatasync(0, file.as_raw_fd(), on_unit)
        .expect("a free slot");
    unit(io)?;
    io.close(0, file, on_unit).expect("a free slot");
    unit(io)?;
    let (from, to) = (path(dir, "data.tmp"), path(dir, "data"));
    io.renameat(0, AT_FDCWD, from, AT_FDCWD, to, 0, on_unit)
        .expect("a free slot");
    unit(io)?;
    let dir_fd = open(io, CString::new(dir)?, libc::O_RDONLY | libc::O_DIRECTORY)?;
    io.fsync(0, dir_fd.as_raw_fd(), on_unit)
        .expect("a free slot");
    unit(io)?;
    io.close(0, dir_fd, on_unit).expect("a free slot");
    unit(io)?;
    Ok(block)
}

/// Reads `dir/data` back with direct I/O.
fn read_back(io: &mut Io<Got>, dir: &str, block: usize) -> io::Result<AlignedBuf> {
    let file = open(io, path(dir, "data"), libc::O_RDONLY | libc::O_DIRECT)?;
    let buf = AlignedBuf::new(block, block)?;
    io.read(0, file.as_raw_fd(), buf, 0, on_buf)
        .expect("a free slot");
    let (read, buf) = step(io)?.buf.expect("the read's callback");
    assert_eq!(read?, block);
    io.close(0, file, on_unit).expect("a free slot");
    unit(io)?;
    Ok(buf)
}

fn main() -> ExitCode {
    let (dir, keep) = match std::env::args().nth(1) {
        Some(dir) => (PathBuf::from(dir), true),
        None => (
            PathBuf::from(format!("target/direct-{}", std::process::id())),
            false,
        ),
    };
    if let Err(error) = std::fs::create_dir_all(&dir) {
        eprintln!("direct: {}: {error}", dir.display());
        return ExitCode::FAILURE;
    }
    let dir_name = dir.to_str().expect("a UTF-8 directory name").to_owned();
    let mut io: Io<Got> = Io::new(&Options::new(4)).expect("a backend");
    let result = replace(&mut io, &dir_name).and_then(|block| {
        let buf = read_back(&mut io, &dir_name, block)?;
        Ok((block, buf))
    });
    if !keep {
        let _ = std::fs::remove_dir_all(&dir);
    }
    match result {
        Ok((block, buf)) if buf.starts_with(RECORD) => {
            let backend = io.stats().backend;
            println!("direct: replaced {dir_name}/data with one {block}-byte block on {backend:?}");
            ExitCode::SUCCESS
        }
        Ok(_) => {
            eprintln!("direct: the block read back differs from the one written");
            ExitCode::FAILURE
        }
        // The first open is the only step O_DIRECT can fail that way (the file system's
        // answer, not a bug): said as a skip, which the example's test accepts only on a file
        // system known to lack it.
        Err(error) if error.raw_os_error() == Some(libc::EINVAL) && !keep => {
            println!("direct: skipped: {dir_name} refuses O_DIRECT ({error})");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("direct: {error}");
            ExitCode::FAILURE
        }
    }
}
