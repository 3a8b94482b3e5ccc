//! The README's taste of storage, as a program: appends records to a log opened with
//! `O_DIRECT`, each one 4 KiB block written from an `AlignedBuf` and made durable with
//! `fdatasync`, then reads the log back and checks it.
//!
//! ```text
//! cargo run -p examples --example storage_taste   # in ./target, removed after
//! ```

use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::process::ExitCode;

use dispatch_loop::Options;

/// `O_DIRECT` (Linux, FreeBSD). macOS has no such flag (its `F_NOCACHE` is a `fcntl` on an
/// open file), so there the file is opened cached: the same program, without the bypass.
#[cfg(not(target_vendor = "apple"))]
const O_DIRECT: i32 = libc::O_DIRECT;
#[cfg(target_vendor = "apple")]
const O_DIRECT: i32 = 0;

use dispatch_loop::{AlignedBuf, Io, Tag};

/// Appends one 4 KiB block to a log opened with `O_DIRECT`, then makes it durable.
fn append(io: &mut Io<Log>, log: &Log, record: &[u8]) {
    let mut block = AlignedBuf::new(4096, 4096).expect("a valid layout");
    block.extend_from_slice(record);
    block.resize(4096, 0); // direct I/O moves whole blocks
    io.write(0, log.fd, block, log.tail, on_written)
        .expect("a free slot");
}

type Written = (std::io::Result<usize>, AlignedBuf);

fn on_written(log: &mut Log, io: &mut Io<Log>, _: Tag, (n, _block): Written) {
    log.tail += n.expect("write") as u64;
    io.fdatasync(0, log.fd, |_, _, _, synced| synced.expect("fdatasync"))
        .expect("a free slot");
}

struct Log {
    fd: std::os::fd::RawFd,
    tail: u64,
}

fn main() -> ExitCode {
    let path = std::path::PathBuf::from(format!("target/storage-taste-{}", std::process::id()));
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .custom_flags(O_DIRECT)
        .open(&path);
    let file = match file {
        Ok(file) => file,
        Err(error) if error.raw_os_error() == Some(libc::EINVAL) => {
            println!(
                "storage_taste: skipped: {} refuses O_DIRECT",
                path.display()
            );
            return ExitCode::SUCCESS;
        }
        Err(error) => {
            eprintln!("storage_taste: {}: {error}", path.display());
            return ExitCode::FAILURE;
        }
    };
    let mut io: Io<Log> = Io::new(&Options::new(4)).expect("a backend");
    let mut log = Log {
        fd: file.as_raw_fd(),
        tail: 0,
    };
    for record in [&b"first record"[..], b"second record"] {
        let at = Log {
            fd: log.fd,
            tail: log.tail,
        };
        append(&mut io, &at, record);
        io.run_until_idle(&mut log).expect("run");
    }
    let mut back = Vec::new();
    std::fs::File::open(&path)
        .and_then(|mut f| f.read_to_end(&mut back))
        .expect("read back");
    let _ = std::fs::remove_file(&path);
    let ok = back.len() == 8192
        && back.starts_with(b"first record")
        && back[4096..].starts_with(b"second record");
    if !ok {
        eprintln!("storage_taste: the log read back is not the two records written");
        return ExitCode::FAILURE;
    }
    println!(
        "storage_taste: appended two durable records on {:?}",
        io.stats().backend
    );
    ExitCode::SUCCESS
}
