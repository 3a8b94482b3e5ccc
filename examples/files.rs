//! A file on the loop: create it, write it, flush it to stable storage, read it back, close it.
//!
//! ```text
//! cargo run -p examples --example files                # a file in the temp dir, removed after
//! cargo run -p examples --example files -- notes.txt   # this file, kept
//! ```
//!
//! openat → write → fsync → read → close, each step a callback that schedules the next.
//! What a file program needs to know:
//! - `openat`'s `dir` is a directory descriptor; [`dispatch_loop::AT_FDCWD`] opens relative to
//!   the working directory. The `O_*` flags and the mode are `open(2)`'s, from `libc`;
//!   `O_CLOEXEC` is always added. The new descriptor arrives as an `OwnedFd`.
//! - A write or a read may do less than asked: continue at `offset + n`, as below.
//! - Never close a descriptor while an operation on it is in flight: the close would race the
//!   operation, and the number could be reused by another file meanwhile. Here the close is
//!   scheduled by the last step's callback, when nothing else is in flight.
//! - On io_uring the kernel performs each operation; on epoll and kqueue, file operations run
//!   inline when the loop turns (readiness cannot wait on regular files), so a slow disk
//!   stalls the loop there.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::process::ExitCode;

use dispatch_loop::{BufResult, Io, Options, Tag, AT_FDCWD};

const TEXT: &[u8] = b"Written, flushed and read back through dispatch-loop.\n";
const FILE: Tag = 0;

/// The one job this program does, as the loop's context.
struct Job {
    /// The file, from the openat until it moves into the close.
    file: Option<OwnedFd>,
    /// Bytes of `TEXT` written so far.
    written: usize,
    /// The bytes read back, once read.
    read_back: Vec<u8>,
    /// The step that failed, and why.
    error: Option<String>,
}

impl Job {
    fn fd(&self) -> std::os::fd::RawFd {
        self.file.as_ref().expect("the file is open").as_raw_fd()
    }

    /// Records the first error; later steps are not scheduled.
    fn fail(&mut self, step: &str, error: impl std::fmt::Display) {
        self.error.get_or_insert_with(|| format!("{step}: {error}"));
    }
}

fn on_open(job: &mut Job, io: &mut Io<Job>, tag: Tag, result: io::Result<OwnedFd>) {
    match result {
        Ok(file) => {
            job.file = Some(file);
            write(job, io, tag, TEXT.to_vec());
        }
        Err(error) => job.fail("open", error),
    }
}

/// Writes `buf` (what is left of `TEXT`) at the offset it belongs at.
fn write(job: &mut Job, io: &mut Io<Job>, tag: Tag, buf: Vec<u8>) {
    let offset = job.written as u64;
    if let Err(error) = io.write(tag, job.fd(), buf, offset, on_write) {
        job.fail("write", error);
        close(job, io, tag);
    }
}

fn on_write(job: &mut Job, io: &mut Io<Job>, tag: Tag, (result, mut buf): BufResult) {
    match result {
        // A short write: write the rest after it.
        Ok(n) if n < buf.len() => {
            job.written += n;
            buf.drain(..n);
            write(job, io, tag, buf);
        }
        Ok(n) => {
            job.written += n;
            if let Err(error) = io.fsync(tag, job.fd(), on_fsync) {
                job.fail("fsync", error);
                close(job, io, tag);
            }
        }
        Err(error) => {
            job.fail("write", error);
            close(job, io, tag);
        }
    }
}

fn on_fsync(job: &mut Job, io: &mut Io<Job>, tag: Tag, result: io::Result<()>) {
    match result {
        Ok(()) => read(job, io, tag, Vec::with_capacity(TEXT.len())),
        Err(error) => {
            job.fail("fsync", error);
            close(job, io, tag);
        }
    }
}

/// Reads into `buf`'s spare capacity, at the offset of the bytes it does not have yet.
fn read(job: &mut Job, io: &mut Io<Job>, tag: Tag, buf: Vec<u8>) {
    let offset = buf.len() as u64;
    if let Err(error) = io.read(tag, job.fd(), buf, offset, on_read) {
        job.fail("read", error);
        close(job, io, tag);
    }
}

fn on_read(job: &mut Job, io: &mut Io<Job>, tag: Tag, (result, buf): BufResult) {
    match result {
        // A short read, not yet at the end of the file: read on.
        Ok(n) if n > 0 && buf.len() < buf.capacity() => read(job, io, tag, buf),
        Ok(_) => {
            job.read_back = buf;
            close(job, io, tag);
        }
        Err(error) => {
            job.fail("read", error);
            close(job, io, tag);
        }
    }
}

/// Closes the file: scheduled only when no other operation on it is in flight.
fn close(job: &mut Job, io: &mut Io<Job>, tag: Tag) {
    let Some(file) = job.file.take() else { return };
    let on_close = |job: &mut Job, _: &mut Io<Job>, _, result: io::Result<()>| {
        if let Err(error) = result {
            job.fail("close", error);
        }
    };
    if let Err(error) = io.close(tag, file, on_close) {
        // Every slot in flight: the descriptor comes back, and dropping it closes it here.
        job.fail("close", &error);
        drop(error.value);
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("files: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() > 1 {
        return Err(format!(
            "unexpected argument {:?} (usage: files [PATH])",
            args[1]
        ));
    }
    let (path, keep) = match args.first() {
        Some(path) => (PathBuf::from(path), true),
        None => {
            let name = format!("dispatch-files-{}.txt", std::process::id());
            (std::env::temp_dir().join(name), false)
        }
    };
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| format!("{}: a path cannot contain a NUL byte", path.display()))?;
    // One operation in flight at a time: one slot.
    let mut io: Io<Job> =
        Io::new(&Options::new(1)).map_err(|error| format!("cannot start the loop: {error}"))?;
    let mut job = Job {
        file: None,
        written: 0,
        read_back: Vec::new(),
        error: None,
    };
    let flags = libc::O_CREAT | libc::O_TRUNC | libc::O_RDWR;
    io.openat(FILE, AT_FDCWD, c_path, flags, 0o644, on_open)
        .map_err(|error| error.to_string())?;
    let result = io.run_until_idle(&mut job);
    if !keep {
        let _ = std::fs::remove_file(&path);
    }
    result.map_err(|error| format!("the loop failed: {error}"))?;
    if let Some(error) = job.error {
        return Err(format!("{}: {error}", path.display()));
    }
    if job.read_back != TEXT {
        return Err(format!(
            "{}: read back other bytes than written",
            path.display()
        ));
    }
    let stats = io.stats();
    println!(
        "files: wrote {} bytes to {}, flushed them, read them back and closed it \
         ({}: {} operations, {} syscalls)",
        job.written,
        path.display(),
        stats.backend,
        stats.ops_completed,
        stats.syscalls
    );
    Ok(())
}
