//! The deterministic simulation backend (`sim`): the same [`Io`](crate::Io) API over a
//! simulated world ([`Sim`]) of listeners, connections and files, with a virtual clock and
//! seeded fault injection, so that a program built on the loop can be tested under faults
//! reproducibly. One seed gives one trace, bit for bit, whatever the machine or its load;
//! [`Sim::trace_hash`] says so in one number.
//!
//! A loop runs on a world when created with [`Io::new_sim`](crate::Io::new_sim), or with
//! `Options::backend = Some(BackendKind::Sim)` or `DISPATCH_BACKEND=sim` (a world of its own
//! then, seeded by `DISPATCH_SIM_SEED`, 0 by default, faults off; reach it with
//! [`Io::sim`](crate::Io::sim)). Automatic selection never picks it, and it says so on stderr
//! (once per process) when an environment variable or option selects it; such a loop, whose
//! world nobody else can reach, prints the world's seed and trace hash on stderr when it is
//! dropped.
//!
//! ```
//! use std::os::fd::AsRawFd;
//! use dispatch_loop::sim::{Faults, Sim, SimOptions};
//! use dispatch_loop::{BufResult, Io, Options};
//!
//! /// Sends "hello" over a simulated socket pair, receives it, and sleeps an hour: the
//! /// world's trace hash.
//! fn run(seed: u64) -> u64 {
//!     // Options structs are `#[non_exhaustive]`: start from a constructor, then set fields.
//!     let mut options = SimOptions::new(seed);
//!     options.faults = Faults::NONE;
//!     let sim = Sim::new(&options).unwrap();
//!     let (a, b) = sim.socket_pair().unwrap();
//!     let mut io: Io<Vec<u8>> = Io::new_sim(&Options::new(8), &sim).unwrap();
//!     io.send(0, a.as_raw_fd(), b"hello".to_vec(), |_, _, _, (sent, _)| {
//!         assert_eq!(sent.unwrap(), 5);
//!     })
//!     .unwrap();
//!     let on_recv = |got: &mut Vec<u8>, _: &mut Io<Vec<u8>>, _, (n, buf): BufResult| {
//!         n.unwrap();
//!         got.extend_from_slice(&buf);
//!     };
//!     io.recv(1, b.as_raw_fd(), Vec::with_capacity(16), on_recv).unwrap();
//!     io.timeout(2, 3_600_000_000_000, |_, _, _, expired| expired.unwrap()).unwrap();
//!     let mut got = Vec::new();
//!     io.run_until_idle(&mut got).unwrap(); // returns at once: an hour of virtual time
//!     assert_eq!(got, b"hello");
//!     assert_eq!(sim.now_ns(), 3_600_000_000_000);
//!     for socket in [a, b] {
//!         io.close(3, socket, |_, _, _, closed| closed.unwrap()).unwrap();
//!     }
//!     io.run_until_idle(&mut got).unwrap();
//!     assert_eq!(sim.open_descriptors(), 0);
//!     sim.trace_hash()
//! }
//!
//! assert_eq!(run(7), run(7)); // one seed, one trace
//! ```
//!
//! # How it differs from the real backends
//! - **Time** is virtual: [`Io::run_for_ns`](crate::Io::run_for_ns) moves the world's clock
//!   from event to event (a delivery, a timer, a deadline, a delayed operation) up to its end
//!   and returns without sleeping; timeouts and deadlines fire at exactly their virtual time.
//!   [`Io::tick`](crate::Io::tick) never moves the clock. The wall clock is never read.
//! - **A run that could only wait forever is an error**: when operations wait and no
//!   simulated event can complete them (a receive nobody will ever answer, without a
//!   deadline), `run_until_idle` (or `run_for_ns(u64::MAX)`) returns an error saying
//!   "simulated deadlock" and the seed, where a real loop would block. A pending
//!   [`Io::wait_wakeup`](crate::Io::wait_wakeup) is the exception: another thread may wake
//!   it, so such a turn returns at once (the loop spins until then). Wake-ups from other
//!   threads are the one thing a simulation cannot make deterministic: virtual time does
//!   not wait for them (a timer due in an hour fires at once if nothing else is due).
//! - **Descriptors** are the world's: [`Sim::listen`], [`Sim::socket`],
//!   [`Sim::socket_pair`], [`Sim::udp_bind`], [`Sim::unix_pair`], descriptors received over
//!   a Unix pair, accepted connections and files opened by
//!   [`Io::openat`](crate::Io::openat). Each is a real descriptor (a duplicate of
//!   `/dev/null`), so that `OwnedFd` stays sound, but its number means nothing to the
//!   simulation: an operation on a descriptor the world does not know fails with `EBADF`
//!   (but a close, which closes it, as on every backend).
//!   Close them with [`Io::close`](crate::Io::close) (or drop the [`SimListener`]): a
//!   dropped `OwnedFd` closes only the real descriptor, and the simulated socket stays open
//!   (see [`Sim`]).
//! - **The network**: a connect reaches the listener on exactly its address (no wildcard
//!   addresses), after the world's latency; nobody listening, or a full backlog, is
//!   `ECONNREFUSED`. Each direction of a connection is a FIFO with a latency per segment; a
//!   receiver holds at most `SimOptions::socket_buffer_bytes` delivered or in flight, and a
//!   sender waits for room (backpressure). Closing a socket with bytes unread resets the
//!   connection, as TCP does; a reset is `ECONNRESET` once, then end of stream for receives
//!   and `EPIPE` for sends. Operations on one socket and direction are served in order, as
//!   on epoll and kqueue.
//! - **Datagrams** ([`Sim::udp_bind`]): [`Io::send_to`](crate::Io::send_to) and
//!   [`Io::sendmsg`](crate::Io::sendmsg) send one datagram to an address, never waiting;
//!   each travels alone with its own latency, and `Faults::datagram_loss`,
//!   `Faults::datagram_duplicate` and `Faults::datagram_reorder` lose, repeat or hold back
//!   some (without the last, the datagrams toward one socket arrive in the order they were
//!   sent). A datagram to an address nobody bound is dropped, silently as UDP does. Receives
//!   ([`Io::recv_from`](crate::Io::recv_from), [`Io::recvmsg`](crate::Io::recvmsg)) report
//!   the sender and truncation. Message operations on a stream socket move its bytes;
//!   descriptors can be passed only over a Unix pair (below; elsewhere `EOPNOTSUPP`).
//! - **Files and directories** live on a simulated disk (below). Paths resolve from `/`
//!   (for an absolute path or `AT_FDCWD`: the simulated working directory is the root) or
//!   from a directory descriptor (opened with `O_DIRECTORY`, or `O_RDONLY`); every
//!   component but the last must exist and be a directory (`ENOENT`, `ENOTDIR`). A new
//!   world's disk holds the root and the directories of `std::env::temp_dir()`, so a
//!   program that keeps its files there runs unchanged. `openat` honours `O_CREAT`,
//!   `O_EXCL`, `O_TRUNC`, `O_DIRECTORY`, `O_APPEND` (every write at the end, as Linux
//!   does), `O_DIRECT`, `O_DSYNC`/`O_SYNC`, the access mode and the permission bits of
//!   `mode` (no umask); offset `u64::MAX` reads and writes at the file position.
//! - **Unix sockets and descriptor passing** ([`Sim::unix_pair`]): a [`UnixKind::Stream`] pair is a
//!   connection like the others (every stream operation works; the reset fault never fires: there
//!   is no network), a [`UnixKind::Datagram`] pair keeps each message whole and in order (never
//!   lost, repeated or reordered; the world's latency, and a send waits while the receiver holds
//!   `SimOptions::socket_buffer_bytes`), through [`Io::sendmsg`](crate::Io::sendmsg) and
//!   [`Io::recvmsg`](crate::Io::recvmsg), or plain `recv`, `send` and `send_vectored`, one message
//!   each (a plain receive keeps what fits its buffer; pooled and multishot receives on it are
//!   `EINVAL`). Errors are Linux's: a stream whose peer closed ends (`ECONNRESET` first if it
//!   closed with bytes unread) and sends fail with `EPIPE`; a datagram socket whose peer closed
//!   refuses one send (`ECONNREFUSED`), then `ENOTCONN`, and its receives wait; an IP address in a
//!   send is `EISCONN` on a stream and `EINVAL` on a datagram socket; a path (`Msg::set_peer_path`)
//!   is `ENOENT`, as the world names no Unix sockets. The descriptors in
//!   [`Msg::fds`](crate::Msg::fds) are passed as the kernel passes them: the sender keeps its own,
//!   and the receiver gets a real duplicate made at the send (so a real pipe works at the other
//!   end). A simulated descriptor passed names the same simulated object at both ends, which stays
//!   open until its last copy is closed through the loop (a copy in flight counts). The received
//!   descriptors are the [`Msg`](crate::Msg)'s; a message whose descriptors do not fit its control
//!   buffer (`Msg::with_fds`, rounded up as `CMSG_SPACE` rounds) reports
//!   [`Msg::control_truncated`](crate::Msg::control_truncated) and brings none: all are closed, as
//!   they are when a plain receive takes the bytes they came with, when the receiving socket closes
//!   with them unread, at a crash, and when the loop is dropped with a receive's result
//!   undelivered. On a stream they ride on the first byte of their send, and a receive stops at the
//!   end of that send's bytes (bytes before them come in the same receive), as on Linux.
//! - Multishot receives and accepts are re-armed by the loop, as on epoll and kqueue; a
//!   pooled receive takes a pool buffer only when bytes are there.
//! - `Stats::syscalls` stays 0: nothing reaches the kernel.
//! - One loop at a time runs on a world. A world is not `Send`.
//!
//! # The disk, and what a crash keeps
//! [`Sim::crash`] is a power loss. What survives it, operation by operation:
//! - **Writes** (`write`, `write_vectored`) change what readers see at once and reach the
//!   durable image only when flushed: by `fsync` or `fdatasync` on the file, or at once for
//!   a write with `RWF_DSYNC` or `RWF_SYNC` or on a descriptor opened `O_DSYNC`/`O_SYNC`
//!   (the simulator then flushes the whole file; Linux flushes the written range). A crash
//!   keeps or loses each unflushed write at even odds, or tears it (`Faults::torn_write`):
//!   a prefix cut at a 512-byte sector boundary, a prefix cut anywhere, or a random subset
//!   of its sectors (a device that writes one request's sectors in any order), sectors
//!   counted from the start of the file, so a sector-aligned `O_DIRECT` write tears on its
//!   own sectors. A torn write never keeps all of itself.
//! - **`fsync` and `fdatasync`** keep the data written before them and the file's size
//!   (Linux's `fdatasync` also flushes a size that changed). `fdatasync` leaves out the
//!   metadata reading the data back does not need: of what the simulator models, space
//!   `fallocate` reserved past the end of the file (`FALLOC_FL_KEEP_SIZE`), which only an
//!   `fsync` makes durable (timestamps are not modelled). Neither makes the file's name
//!   durable.
//! - **`ftruncate`, `O_TRUNC` and `fallocate`** change the size (and, for `fallocate`, the
//!   space reserved) at once for readers, durably after the file's next `fsync` or
//!   `fdatasync`; a crash before keeps or drops each such change at random.
//! - **Names** (`openat` with `O_CREAT`, `mkdirat`, `unlinkat`, `renameat`): each change
//!   is atomic (a rename moves the name or does not) and durable only once a directory it
//!   touches is fsynced (open it with `O_DIRECTORY` and [`Io::fsync`](crate::Io::fsync)
//!   it), together with the earlier changes of the same names. A crash keeps or drops each
//!   change not yet durable at even odds (a change to a name whose earlier change was
//!   dropped is dropped too): a created and fsynced file whose directory was not fsynced
//!   may vanish, a rename may be undone, an unlinked file may come back.
//! - **A failed `fsync`** (`EIO`, `Faults::disk_eio`) settles the file's unflushed writes as
//!   a crash would (each kept, lost or torn) and forgets them, as Linux marks pages clean
//!   after a writeback error: readers still see the bytes, a later `fsync` succeeds, and
//!   a crash may still lose them. A program must treat data behind a failed fsync as lost
//!   and write it again. A directory's fsync never fails.
//!
//! **Direct I/O**: on a file opened `O_DIRECT`, a read or write whose buffer address,
//! offset or length is not a multiple of 512 fails with `EINVAL` (as
//! [`Io::statx`](crate::Io::statx) reports: `dio_mem_align` and `dio_offset_align` 512),
//! and a short transfer is whole sectors. **Space**: files take whole 4 KiB blocks up to
//! their size or reservation; past `SimOptions::disk_capacity_bytes` a write is short or
//! fails with `ENOSPC`, and a `fallocate` fails with `ENOSPC`; writes into space
//! `fallocate` reserved never fail.
//! `fallocate` models mode 0 and `FALLOC_FL_KEEP_SIZE`; other modes are `EOPNOTSUPP`.
//! `RWF_*` flags other than `RWF_DSYNC` and `RWF_SYNC` are `EOPNOTSUPP`. `statx` reports
//! the size, type and permissions, links, blocks of 512 bytes, a block size of 4096 and
//! the direct I/O alignment.
//!
//! # Faults
//! [`Faults`] sets a probability (parts per million) for each: extra latency for segments
//! and completions, completions of different descriptors reordered (never two of one
//! descriptor), short sends, receives, reads and writes, resets, refused connects, operations
//! delayed before their first try (an `EAGAIN` storm), `EMFILE` on accept, `EIO` from the
//! disk (reads, writes, fsyncs), writes torn by a crash, lost cancels, and datagrams lost,
//! doubled or reordered. `ENOSPC` is not drawn: it
//! comes from the disk's capacity. Every fault drawn is in the trace.

pub use crate::backend::sim::{
    FaultCounts, Faults, Peer, Sim, SimListener, SimOptions, SimStats, UnixKind,
};
