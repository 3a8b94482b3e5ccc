//! The log on the loop: opening (with recovery), appends with group commit, and the
//! acknowledgements.
//!
//! How a record becomes durable: [`Wal::append`] copies it into the group being filled (an
//! [`AlignedBuf`]) and, if no group is on its way, schedules a `nop`. The `nop` completes in
//! the loop's next turn, after every callback of this one ran, so every record appended in
//! the turn is in the group when its callback writes the group (one direct write at the
//! log's end, a fresh 4 KiB block) and then `fdatasync`s the file. Only when the
//! `fdatasync`'s callback reports success are the group's records acknowledged, in order.
//! Records appended while a group is on its way wait in the other buffer and go out as the
//! next group as soon as the flush completes: one write and one flush however many callers
//! there were. A short write is written again whole (the bytes are nobody's promise yet);
//! an error (`EIO`, `ENOSPC`) fails the group's records and every later one, and the log
//! stays failed until it is opened again (recovered): after a failed `fdatasync` the data
//! may be lost, so nothing written since the last good flush can be trusted.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use dispatch_loop::{AlignedBuf, Io, Tag, AT_FDCWD};

use crate::format::{self, BLOCK, GROUP_HEADER, RECORD_HEADER};

/// The program's context holds its log: callbacks reach it through this trait (as
/// dispatch-net's `Handler::net` does).
pub trait WalHost: Sized + 'static {
    /// The log inside the program's state.
    fn wal(&mut self) -> &mut Wal<Self>;
}

/// Called once the log is open: the records recovered, in order (the first has sequence
/// number 1), or why it could not open.
pub type OpenCallback<C> = fn(&mut C, &mut Io<C>, io::Result<Vec<Vec<u8>>>);

/// Called once a record is durable (its group's `fdatasync` succeeded) with its sequence
/// number, or with the error that failed it. `Tag` is the one given to [`Wal::append`].
pub type AckCallback<C> = fn(&mut C, &mut Io<C>, Tag, io::Result<u64>);

/// How to open a log.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct WalOptions {
    /// The directory the log lives in (it must exist; it is fsynced so the log's name
    /// survives a crash).
    pub dir: CString,
    /// The log file's name in `dir`.
    pub name: CString,
    /// Open with `O_DIRECT` (a disk-backed file system: tmpfs before Linux 6.6 refuses it
    /// with `EINVAL`).
    pub direct: bool,
    /// The most bytes one group may take (a multiple of 4 KiB): the size of each of the two
    /// group buffers. An append that does not fit waits for the caller to try again.
    pub group_bytes_max: usize,
    /// Test only: acknowledge a group's records as soon as its write completes, before its
    /// `fdatasync` (the bug the crash fuzzer must catch). Never set it outside such a test.
    #[doc(hidden)]
    pub ack_before_sync_for_testing: bool,
}

impl WalOptions {
    /// The log `name` in `dir`, direct I/O, 1 MiB groups.
    pub fn new(dir: &str, name: &str) -> WalOptions {
        WalOptions {
            dir: CString::new(dir).expect("no NUL in the directory"),
            name: CString::new(name).expect("no NUL in the name"),
            direct: true,
            group_bytes_max: 1 << 20,
            ack_before_sync_for_testing: false,
        }
    }
}

/// Why an append was refused (nothing was queued).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AppendError {
    /// The log is not open (or is still recovering).
    NotOpen,
    /// The log failed (the errno): open it again.
    Failed(i32),
    /// Empty records are not allowed.
    Empty,
    /// The record can never fit in a group (`WalOptions::group_bytes_max`).
    TooLarge,
    /// The group being filled is full: try again after an acknowledgement.
    Full,
    /// The loop had no free slot for the log's operation: try again later.
    NoSlot,
}

/// What the log did since it was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WalStats {
    /// Groups written and flushed (one write and one `fdatasync` each).
    pub groups: u64,
    /// Records acknowledged.
    pub acked: u64,
    /// Records failed.
    pub failed: u64,
    /// Bytes written, padding included.
    pub bytes_written: u64,
    /// Writes that were short and written again.
    pub rewrites: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed,
    Opening,
    Ready,
    Failed(i32),
}

/// A record waiting for its acknowledgement.
struct Pending<C> {
    tag: Tag,
    lsn: u64,
    callback: AckCallback<C>,
}

/// A write-ahead log on an [`Io`] loop (see the crate's docs).
pub struct Wal<C> {
    options: WalOptions,
    state: State,
    dir: Option<OwnedFd>,
    file: Option<OwnedFd>,
    on_open: Option<OpenCallback<C>>,
    /// Recovery: the file's bytes read so far.
    image: Vec<u8>,
    /// Recovery: the records found, handed to `on_open` once the cut is durable.
    recovered: Vec<Vec<u8>>,
    /// The group being filled; `spare` is the other buffer, away while a group is written.
    staging: Option<AlignedBuf>,
    spare: Option<AlignedBuf>,
    staged: Vec<Pending<C>>,
    flying: Vec<Pending<C>>,
    staged_first_lsn: u64,
    next_lsn: u64,
    /// Where the next group goes; the group on its way starts at `end` too.
    end: u64,
    nop_scheduled: bool,
    group_in_flight: bool,
    /// The length of the group on its way, padding included.
    group_bytes: u64,
    /// After a failure: the end of the last group flushed, past which a reopen by this
    /// `Wal` does not trust what it reads (see `recovered`).
    trusted_end: Option<u64>,
    stats: WalStats,
}

impl<C> std::fmt::Debug for Wal<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wal")
            .field("state", &self.state)
            .field("end", &self.end)
            .field("next_lsn", &self.next_lsn)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

fn errno(error: &io::Error) -> i32 {
    error.raw_os_error().unwrap_or(libc::EIO)
}

impl<C: WalHost> Wal<C> {
    /// A closed log with its two group buffers allocated; [`Wal::open`] it.
    ///
    /// # Errors
    /// `InvalidInput` when `group_bytes_max` is not a positive multiple of 4 KiB.
    pub fn new(options: &WalOptions) -> io::Result<Wal<C>> {
        let size = options.group_bytes_max;
        if size == 0 || !size.is_multiple_of(BLOCK) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "group_bytes_max must be a positive multiple of 4096",
            ));
        }
        Ok(Wal {
            options: options.clone(),
            state: State::Closed,
            dir: None,
            file: None,
            on_open: None,
            image: Vec::new(),
            recovered: Vec::new(),
            staging: Some(AlignedBuf::new(size, BLOCK)?),
            spare: Some(AlignedBuf::new(size, BLOCK)?),
            staged: Vec::new(),
            flying: Vec::new(),
            staged_first_lsn: 1,
            next_lsn: 1,
            end: 0,
            nop_scheduled: false,
            group_in_flight: false,
            group_bytes: 0,
            trusted_end: None,
            stats: WalStats::default(),
        })
    }

    /// Counters.
    pub fn stats(&self) -> WalStats {
        self.stats
    }

    /// Whether appends are taken.
    pub fn is_ready(&self) -> bool {
        self.state == State::Ready
    }

    /// The errno the log failed with, if it did.
    pub fn failed(&self) -> Option<i32> {
        match self.state {
            State::Failed(errno) => Some(errno),
            _ => None,
        }
    }

    /// Whether nothing is on its way: no group written or flushed, no record waiting. A
    /// log closes cleanly only then.
    pub fn is_idle(&self) -> bool {
        !self.group_in_flight && !self.nop_scheduled && self.staged.is_empty()
    }

    /// The sequence number the next record will get.
    pub fn next_lsn(&self) -> u64 {
        self.next_lsn
    }

    /// Opens the log: creates it if missing, makes its name durable, reads it back and cuts
    /// it after its last whole group (durably), then calls `on_open` with the records. Needs
    /// one free slot of the loop at a time while it runs.
    ///
    /// # Errors
    /// `AppendError::NotOpen` if it is not closed; `NoSlot` if the loop has no free slot.
    pub fn open(&mut self, io: &mut Io<C>, on_open: OpenCallback<C>) -> Result<(), AppendError> {
        if self.state != State::Closed {
            return Err(AppendError::NotOpen);
        }
        let flags = libc::O_RDONLY | libc::O_DIRECTORY;
        let dir = self.options.dir.clone();
        io.openat(0, AT_FDCWD, dir, flags, 0, on_dir::<C>)
            .map_err(|_| AppendError::NoSlot)?;
        self.state = State::Opening;
        self.on_open = Some(on_open);
        Ok(())
    }

    /// Queues `record` for the next group; `on_durable` runs once it is durable (or failed).
    /// The record's sequence number.
    ///
    /// # Errors
    /// See [`AppendError`]; nothing was queued.
    pub fn append(
        &mut self,
        io: &mut Io<C>,
        tag: Tag,
        record: &[u8],
        on_durable: AckCallback<C>,
    ) -> Result<u64, AppendError> {
        match self.state {
            State::Ready => {}
            State::Failed(errno) => return Err(AppendError::Failed(errno)),
            State::Closed | State::Opening => return Err(AppendError::NotOpen),
        }
        let size = self.options.group_bytes_max;
        if record.is_empty() {
            return Err(AppendError::Empty);
        }
        if GROUP_HEADER + RECORD_HEADER + record.len() > size {
            return Err(AppendError::TooLarge);
        }
        let staging = self.staging.as_mut().expect("the staging buffer is home");
        if staging.len().max(GROUP_HEADER) + RECORD_HEADER + record.len() > size {
            return Err(AppendError::Full);
        }
        if self.staged.is_empty() {
            format::begin_group(staging);
            self.staged_first_lsn = self.next_lsn;
        }
        if !self.group_in_flight && !self.nop_scheduled {
            io.nop(0, on_turn_end::<C>).map_err(|_| {
                if self.staged.is_empty() {
                    staging.clear();
                }
                AppendError::NoSlot
            })?;
            self.nop_scheduled = true;
        }
        let lsn = self.next_lsn;
        format::push_record(staging, lsn, record);
        self.staged.push(Pending {
            tag,
            lsn,
            callback: on_durable,
        });
        self.next_lsn += 1;
        Ok(lsn)
    }

    /// Closes the log's descriptors (also those a simulated crash killed). Call it when no
    /// group is on its way, or on a new loop after the old one was dropped.
    ///
    /// After a failure, close and [`Wal::open`] this same `Wal` to go on: it remembers where
    /// the last successful flush ended and cuts the log there, whatever the file reads back
    /// beyond (after a failed `fdatasync` Linux may return bytes that are not on disk). A new
    /// `Wal` in the same boot cannot know that; after a real crash it does not matter.
    pub fn close(&mut self, io: &mut Io<C>) {
        for fd in [self.file.take(), self.dir.take()].into_iter().flatten() {
            // A close that cannot be scheduled closes when the `OwnedFd` drops.
            let _ = io.close(0, fd, |_, _, _, _| {});
        }
        self.state = State::Closed;
    }

    fn file_fd(&self) -> i32 {
        self.file.as_ref().expect("the log is open").as_raw_fd()
    }
}

/// The directory is open: open (or create) the log in it.
fn on_dir<C: WalHost>(c: &mut C, io: &mut Io<C>, _: Tag, dir: io::Result<OwnedFd>) {
    let wal = c.wal();
    let dir = match dir {
        Ok(dir) => wal.dir.insert(dir).as_raw_fd(),
        Err(error) => return open_failed(c, io, &error),
    };
    let direct = if wal.options.direct { o_direct() } else { 0 };
    let flags = libc::O_CREAT | libc::O_RDWR | direct;
    let name = wal.options.name.clone();
    if io.openat(0, dir, name, flags, 0o644, on_file::<C>).is_err() {
        open_failed(c, io, &io::Error::from_raw_os_error(libc::ENOBUFS));
    }
}

/// `O_DIRECT` where the system has it; macOS has none (`F_NOCACHE` is a different
/// promise), so there the log goes through the page cache.
const fn o_direct() -> i32 {
    #[cfg(any(target_os = "linux", target_os = "freebsd"))]
    return libc::O_DIRECT;
    #[cfg(not(any(target_os = "linux", target_os = "freebsd")))]
    return 0;
}

/// The log is open: make its name durable (fsync the directory).
fn on_file<C: WalHost>(c: &mut C, io: &mut Io<C>, _: Tag, file: io::Result<OwnedFd>) {
    let wal = c.wal();
    match file {
        Ok(file) => wal.file = Some(file),
        Err(error) => return open_failed(c, io, &error),
    }
    let dir = wal.dir.as_ref().expect("open").as_raw_fd();
    let synced = |c: &mut C, io: &mut Io<C>, _: Tag, synced: io::Result<()>| match synced {
        Ok(()) => read_next(c, io),
        Err(error) => open_failed(c, io, &error),
    };
    if io.fsync(0, dir, synced).is_err() {
        open_failed(c, io, &io::Error::from_raw_os_error(libc::ENOBUFS));
    }
}

/// Recovery reads this much at a time.
const READ_CHUNK: usize = 256 * 1024;

/// Reads the next chunk of the log (at the end of what was read).
fn read_next<C: WalHost>(c: &mut C, io: &mut Io<C>) {
    let wal = c.wal();
    let offset = wal.image.len() as u64;
    let buf = match AlignedBuf::new(READ_CHUNK, BLOCK) {
        Ok(buf) => buf,
        Err(error) => return open_failed(c, io, &error),
    };
    let on_read =
        |c: &mut C, io: &mut Io<C>, _: Tag, (n, buf): (io::Result<usize>, AlignedBuf)| match n {
            Ok(0) => recovered(c, io),
            Ok(_) => {
                let image = &mut c.wal().image;
                image.extend_from_slice(&buf);
                // A read that ends off a sector boundary ended at the end of the file (a
                // torn write can leave any size): another direct read there would be
                // misaligned (`EINVAL`), and there is nothing more to read.
                if image.len().is_multiple_of(512) {
                    read_next(c, io);
                } else {
                    recovered(c, io);
                }
            }
            Err(error) => open_failed(c, io, &error),
        };
    if io.read(0, wal.file_fd(), buf, offset, on_read).is_err() {
        open_failed(c, io, &io::Error::from_raw_os_error(libc::ENOBUFS));
    }
}

/// The whole log is read: find its end, and cut what follows, durably, before any append
/// (so that no stale group past the end can ever follow a new one).
fn recovered<C: WalHost>(c: &mut C, io: &mut Io<C>) {
    let wal = c.wal();
    // After a failed write or flush in this process, what the file reads back past the last
    // good flush may be only in the page cache (Linux keeps the pages, marked clean, after a
    // writeback error): none of it was acknowledged, so the log ends there at the latest.
    let trusted = wal.trusted_end.map_or(wal.image.len(), |end| end as usize);
    let parsed = format::parse(&wal.image[..trusted.min(wal.image.len())]);
    wal.image = Vec::new();
    wal.end = parsed.end;
    wal.next_lsn = parsed.records.len() as u64 + 1;
    let fd = wal.file_fd();
    let on_cut = |c: &mut C, io: &mut Io<C>, _: Tag, cut: io::Result<()>| {
        if let Err(error) = cut {
            return open_failed(c, io, &error);
        }
        let fd = c.wal().file_fd();
        let on_synced = |c: &mut C, io: &mut Io<C>, _: Tag, synced: io::Result<()>| {
            if let Err(error) = synced {
                return open_failed(c, io, &error);
            }
            let records = std::mem::take(&mut c.wal().recovered);
            opened(c, io, records);
        };
        if io.fdatasync(0, fd, on_synced).is_err() {
            open_failed(c, io, &io::Error::from_raw_os_error(libc::ENOBUFS));
        }
    };
    wal.recovered = parsed.records;
    if io.ftruncate(0, fd, parsed.end, on_cut).is_err() {
        open_failed(c, io, &io::Error::from_raw_os_error(libc::ENOBUFS));
    }
}

fn opened<C: WalHost>(c: &mut C, io: &mut Io<C>, records: Vec<Vec<u8>>) {
    let wal = c.wal();
    wal.state = State::Ready;
    // The cut is durable: everything up to `end` is on disk, and the file is trusted again
    // (a stale limit would cut acknowledged groups at the next reopen).
    wal.trusted_end = None;
    let on_open = wal.on_open.take().expect("an open under way");
    on_open(c, io, Ok(records));
}

fn open_failed<C: WalHost>(c: &mut C, io: &mut Io<C>, error: &io::Error) {
    let wal = c.wal();
    wal.state = State::Failed(errno(error));
    wal.image = Vec::new();
    wal.recovered = Vec::new();
    let on_open = wal.on_open.take().expect("an open under way");
    on_open(c, io, Err(io::Error::from_raw_os_error(errno(error))));
}

/// The turn that appended ended: write its group.
fn on_turn_end<C: WalHost>(c: &mut C, io: &mut Io<C>, _: Tag, _: io::Result<()>) {
    c.wal().nop_scheduled = false;
    start_group(c, io);
}

/// Writes the staged records as one group at the log's end, if no group is on its way.
fn start_group<C: WalHost>(c: &mut C, io: &mut Io<C>) {
    let wal = c.wal();
    if wal.group_in_flight || wal.staged.is_empty() || wal.state != State::Ready {
        return;
    }
    let mut buf = wal.staging.take().expect("the staging buffer is home");
    let count = u32::try_from(wal.staged.len()).expect("a group's count fits 32 bits");
    format::finish_group(&mut buf, wal.staged_first_lsn, count);
    wal.group_bytes = buf.len() as u64;
    wal.staging = Some(wal.spare.take().expect("no group on its way"));
    std::mem::swap(&mut wal.staged, &mut wal.flying);
    wal.group_in_flight = true;
    write_group(c, io, buf);
}

fn write_group<C: WalHost>(c: &mut C, io: &mut Io<C>, buf: AlignedBuf) {
    let wal = c.wal();
    let (fd, end) = (wal.file_fd(), wal.end);
    if let Err(error) = io.write(0, fd, buf, end, on_group_written::<C>) {
        c.wal().spare = Some(error.value);
        fail(c, io, libc::ENOBUFS);
    }
}

fn on_group_written<C: WalHost>(
    c: &mut C,
    io: &mut Io<C>,
    _: Tag,
    (n, mut buf): (io::Result<usize>, AlignedBuf),
) {
    let wal = c.wal();
    match n {
        Ok(n) if n == buf.len() => {
            wal.stats.bytes_written += n as u64;
            buf.clear();
            wal.spare = Some(buf);
        }
        Ok(_) => {
            // Short: write the whole group again (none of it was promised to anyone).
            wal.stats.rewrites += 1;
            return write_group(c, io, buf);
        }
        Err(error) => {
            buf.clear();
            wal.spare = Some(buf);
            return fail(c, io, errno(&error));
        }
    }
    if wal.options.ack_before_sync_for_testing {
        acknowledge(c, io);
    }
    let fd = c.wal().file_fd();
    if io.fdatasync(0, fd, on_group_synced::<C>).is_err() {
        fail(c, io, libc::ENOBUFS);
    }
}

fn on_group_synced<C: WalHost>(c: &mut C, io: &mut Io<C>, _: Tag, synced: io::Result<()>) {
    if let Err(error) = synced {
        return fail(c, io, errno(&error));
    }
    let wal = c.wal();
    wal.end += wal.group_bytes;
    wal.stats.groups += 1;
    wal.group_in_flight = false;
    acknowledge(c, io);
    start_group(c, io);
}

/// Acknowledges the records of the group on its way, in order.
fn acknowledge<C: WalHost>(c: &mut C, io: &mut Io<C>) {
    let mut acks = std::mem::take(&mut c.wal().flying);
    c.wal().stats.acked += acks.len() as u64;
    for pending in acks.drain(..) {
        (pending.callback)(c, io, pending.tag, Ok(pending.lsn));
    }
    let wal = c.wal();
    if wal.flying.is_empty() {
        wal.flying = acks;
    }
}

/// The log failed with `errno`: every record not acknowledged fails, and so will every
/// later append, until the log is opened again.
fn fail<C: WalHost>(c: &mut C, io: &mut Io<C>, errno: i32) {
    let wal = c.wal();
    wal.state = State::Failed(errno);
    wal.trusted_end = Some(wal.end);
    wal.group_in_flight = false;
    let mut failed = std::mem::take(&mut wal.flying);
    failed.append(&mut wal.staged);
    if let Some(staging) = wal.staging.as_mut() {
        staging.clear();
    }
    wal.stats.failed += failed.len() as u64;
    for pending in failed {
        let error = io::Error::from_raw_os_error(errno);
        (pending.callback)(c, io, pending.tag, Err(error));
    }
}
