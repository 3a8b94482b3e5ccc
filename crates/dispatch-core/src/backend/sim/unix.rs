//! Unix socket pairs on the simulated world ([`Sim::unix_pair`]) and descriptors passed over
//! them with `SCM_RIGHTS` ([`crate::Io::sendmsg`] with [`crate::Msg::fds`]).
//!
//! A stream pair is a pair of the world's stream endpoints (`net.rs`) marked Unix: every
//! stream operation works on it unchanged; only the reset fault never fires (there is no
//! network to reset it). A datagram pair is an object of its own here: each message is one
//! datagram, kept whole and in order (Unix datagrams are never lost, duplicated or
//! reordered, so those faults do not apply), delivered after the world's latency (the
//! latency fault applies), and a send waits while the receiver holds
//! `SimOptions::socket_buffer_bytes` (backpressure), as Linux's does.
//!
//! Descriptors passed are real: a send duplicates each one (`F_DUPFD_CLOEXEC`), as the
//! kernel takes a reference to each open file, and the receiver gets that duplicate, so a
//! real pipe passed over a simulated pair works at the other end. A simulated descriptor
//! passed names the same simulated object at both ends: the object has one reference per
//! descriptor naming it and per copy in flight (`Unix::refs` counts those beyond the
//! first), and is released (a connection's peer sees the end of stream) only when the last
//! goes. Nothing leaks: a receive whose control buffer is too small (`MSG_CTRUNC`) closes
//! every descriptor of its message, as does a plain receive that takes the bytes they came
//! with, closing the receiving socket with messages unread, a crash, or dropping the world.
//! A cancelled receive took nothing; a loop dropped with a receive's result undelivered
//! closes what it brought (`io/drop.rs` tells the world). Not modelled: Linux's garbage
//! collection of descriptor cycles (a socket passed into its own receive queue, then every
//! descriptor of it closed): such a cycle stays until its world is dropped, as it would in a
//! kernel without that collector.
//!
//! On a stream, descriptors ride on the first byte of the send that passed them: a receive
//! that takes that byte gets them, and stops at the end of that send's bytes (Linux glues
//! bytes before it into the same receive, and stops after the bytes that carried them).

use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use super::dgram::{scatter, send as stream_send, spare_lens};
use super::net::Recv;
use super::world::{Event, Obj, World};
use super::{Sim, Tried};
use crate::msg::Msg;
use crate::operation::Args;

/// The kind of a Unix socket pair ([`Sim::unix_pair`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnixKind {
    /// `SOCK_STREAM`: a byte stream, as the world's other connections.
    Stream,
    /// `SOCK_DGRAM`: messages kept whole and in order.
    Datagram,
}

/// A descriptor passed: the duplicate the receiver will own, and the simulated object it
/// names, if any (a reference to it is held while the descriptor is in flight).
pub(crate) struct Passed {
    fd: OwnedFd,
    obj: Option<Obj>,
}

/// Descriptors passed on a Unix stream, attached to the sender's bytes `offset..offset + len`.
struct Attached {
    offset: u64,
    len: u64,
    fds: Vec<Passed>,
}

/// One end of a Unix datagram pair.
struct DgramEnd {
    peer: u32,
    open: bool,
    /// A send after the peer closed said `ECONNREFUSED`; later ones say `ENOTCONN`.
    refused: bool,
    queue: VecDeque<Message>,
    queued_bytes: usize,
    last_at_ns: u64,
}

struct Message {
    at_ns: u64,
    bytes: Vec<u8>,
    fds: Vec<Passed>,
}

/// The world's Unix datagram pairs and the descriptors in flight over Unix sockets.
#[derive(Default)]
pub(crate) struct Unix {
    dgrams: Vec<DgramEnd>,
    /// Toward each Unix stream endpoint: descriptors attached to bytes not yet received.
    attached: BTreeMap<u32, VecDeque<Attached>>,
    /// References to an object (by key) beyond the first: descriptors naming it that
    /// arrived over a Unix socket, and copies in flight.
    refs: BTreeMap<u64, u32>,
}

impl Unix {
    /// One reference to `obj` goes: `true` if others remain (the object stays).
    pub(crate) fn drop_ref(&mut self, obj: Obj) -> bool {
        let Some(count) = self.refs.get_mut(&obj.key()) else {
            return false;
        };
        assert!(*count > 0, "no zero counts are kept");
        *count -= 1;
        if *count == 0 {
            self.refs.remove(&obj.key());
        }
        true
    }
}

impl World {
    fn unix_pair(&mut self, kind: UnixKind) -> Result<(Obj, Obj), i32> {
        Ok(match kind {
            UnixKind::Stream => {
                let (a, b) = self.pair();
                self.net.endpoints[a as usize].unix = true;
                self.net.endpoints[b as usize].unix = true;
                (Obj::Stream(a), Obj::Stream(b))
            }
            UnixKind::Datagram => {
                let a = self.unix.dgrams.len() as u32;
                for peer in [a + 1, a] {
                    self.unix.dgrams.push(DgramEnd {
                        peer,
                        open: true,
                        refused: false,
                        queue: VecDeque::new(),
                        queued_bytes: 0,
                        last_at_ns: 0,
                    });
                }
                self.stats.connections += 1;
                (Obj::UnixDgram(a), Obj::UnixDgram(a + 1))
            }
        })
    }

    /// Duplicates `fds` for a message in flight, each simulated one holding a reference to
    /// its object. `-errno` (`EBADF`, `EMFILE`) passes none.
    fn pass(&mut self, fds: &[OwnedFd]) -> Result<Vec<Passed>, i32> {
        let mut passed = Vec::with_capacity(fds.len());
        for fd in fds {
            match rustix::io::fcntl_dupfd_cloexec(fd.as_fd(), 0) {
                Ok(dup) => {
                    let obj = self.obj(fd.as_raw_fd());
                    passed.push(Passed { fd: dup, obj });
                    if let Some(obj) = obj.filter(|&obj| obj != Obj::Dead) {
                        *self.unix.refs.entry(obj.key()).or_insert(0) += 1;
                    }
                }
                Err(errno) => {
                    self.discard(passed);
                    return Err(-errno.raw_os_error());
                }
            }
        }
        Ok(passed)
    }

    /// Closes descriptors that will never be received: each real duplicate, and each
    /// simulated object's reference (the object goes with its last).
    fn discard(&mut self, passed: Vec<Passed>) {
        for Passed { fd, obj } in passed {
            drop(fd);
            if let Some(obj) = obj.filter(|&obj| obj != Obj::Dead) {
                self.release(obj);
            }
        }
    }

    /// Hands `passed` to `msg`, or closes them all if they do not fit its control buffer or
    /// the world's descriptor table (`MSG_CTRUNC`): whether they were cut.
    fn hand_fds(&mut self, msg: &mut Msg, passed: Vec<Passed>) -> bool {
        let simulated = passed.iter().filter(|p| p.obj.is_some()).count();
        let table_full = self.fds.len() + simulated > self.options.descriptors_max as usize;
        if passed.len() > msg.sim_fds_room() || table_full {
            let cut = !passed.is_empty();
            self.discard(passed);
            return cut;
        }
        for Passed { fd, obj } in passed {
            if let Some(obj) = obj {
                // The reference in flight becomes the new descriptor's. A number the table
                // still holds was closed behind the simulator's back (see `new_fd`).
                if let Some(old) = self.fds.insert(fd.as_raw_fd(), obj) {
                    self.stats.dropped_descriptors += 1;
                    self.release(old);
                }
            }
            msg.fds_mut().push(fd);
        }
        false
    }

    /// Unix stream endpoint `endpoint` closed for good: what was passed toward it goes.
    pub(crate) fn unix_stream_closed(&mut self, endpoint: u32) {
        let attached = self.unix.attached.remove(&endpoint).unwrap_or_default();
        for entry in attached {
            self.discard(entry.fds);
        }
    }

    /// Unix datagram end `id` closed for good: its messages go, its peer's sends are refused.
    pub(crate) fn unix_dgram_close(&mut self, id: u32) {
        let end = &mut self.unix.dgrams[id as usize];
        assert!(end.open, "closed once");
        end.open = false;
        end.queued_bytes = 0;
        let queue = std::mem::take(&mut end.queue);
        for message in queue {
            self.discard(message.fds);
        }
    }

    /// `poll(2)`'s events for Unix datagram end `id`: readable with a message due; writable
    /// with room at the peer, or when a send would fail at once (the peer closed).
    pub(crate) fn unix_dgram_poll(&self, id: u32) -> i16 {
        let end = &self.unix.dgrams[id as usize];
        let due = end.queue.front().is_some_and(|m| m.at_ns <= self.now_ns());
        let peer = &self.unix.dgrams[end.peer as usize];
        let full = peer.open && peer.queued_bytes >= self.options.socket_buffer_bytes as usize;
        let readable = if due { libc::POLLIN } else { 0 };
        let writable = if full { 0 } else { libc::POLLOUT };
        readable | writable
    }

    /// At a crash: everything in flight over Unix sockets dies, references and all; the
    /// objects that only messages in flight named, to be released with the others.
    pub(crate) fn unix_crash(&mut self) -> Vec<Obj> {
        let mut passed: Vec<Passed> = Vec::new();
        for entries in std::mem::take(&mut self.unix.attached).into_values() {
            passed.extend(entries.into_iter().flat_map(|entry| entry.fds));
        }
        for end in &mut self.unix.dgrams {
            end.queued_bytes = 0;
            passed.extend(end.queue.drain(..).flat_map(|message| message.fds));
        }
        self.unix.refs.clear();
        let objs = passed.iter().filter_map(|p| p.obj);
        let objs: Vec<Obj> = objs.filter(|&obj| obj != Obj::Dead).collect();
        drop(passed);
        objs
    }
}

/// A `sendmsg` or `recvmsg` on a Unix socket of the world, if `args`' descriptor names one
/// (`None`: not a Unix socket, for `dgram.rs`).
pub(super) fn msg_op(world: &mut World, args: &mut Args) -> Option<Tried> {
    let (Args::SendMsg { fd, .. } | Args::RecvMsg { fd, .. }) = *args else {
        unreachable!("{} is not a message operation", args.label())
    };
    let obj = world.obj(fd)?;
    let unix = matches!(obj, Obj::Stream(ep) if world.net.endpoints[ep as usize].unix);
    Some(match (args, obj) {
        (Args::SendMsg { msg, .. }, Obj::Stream(ep)) if unix => send(world, ep, msg),
        (Args::RecvMsg { msg, .. }, Obj::Stream(ep)) if unix => recv(world, ep, msg),
        (Args::SendMsg { msg, .. }, Obj::UnixDgram(id)) => send_dgram(world, id, msg),
        (Args::RecvMsg { msg, .. }, Obj::UnixDgram(id)) => recv_dgram(world, id, msg),
        _ => return None,
    })
}

/// `-errno` for a send with an address on a Unix socket pair: an IP address is the wrong
/// family (`EINVAL` for a datagram socket, `EISCONN` for a connected stream, as Linux
/// says); a path names no socket of the world (`ENOENT`), and a stream is connected.
fn addressed(msg: &Msg, stream: bool) -> Option<i32> {
    match (msg.peer().is_some(), msg.peer_path().is_some(), stream) {
        (false, false, _) => None,
        (_, _, true) => Some(-libc::EISCONN),
        (true, _, false) => Some(-libc::EINVAL),
        (false, true, false) => Some(-libc::ENOENT),
    }
}

/// A send on a Unix stream: the bytes as on any stream, the descriptors attached to the
/// first byte sent.
fn send(world: &mut World, endpoint: u32, msg: &Msg) -> Tried {
    if let Some(errno) = addressed(msg, true) {
        return Some((errno, 0));
    }
    let offset = world.net.endpoints[endpoint as usize].sent_bytes;
    let passed = match world.pass(msg.fds()) {
        Ok(passed) => passed,
        Err(errno) => return Some((errno, 0)),
    };
    let tried = stream_send(world, endpoint, msg);
    match tried {
        Some((n, _)) if n > 0 && !passed.is_empty() => {
            let peer = world.net.endpoints[endpoint as usize].peer;
            let queue = world.unix.attached.entry(peer).or_default();
            assert!(queue
                .back()
                .is_none_or(|last| last.offset + last.len <= offset));
            queue.push_back(Attached {
                offset,
                len: n as u64,
                fds: passed,
            });
        }
        // Nothing sent (a wait, an error, no bytes): the duplicates go; the sender keeps
        // its own descriptors, and a send tried again passes them again.
        _ => world.discard(passed),
    }
    tried
}

/// A receive on a Unix stream: up to the end of the next send that passed descriptors,
/// which come with its first byte.
fn recv(world: &mut World, endpoint: u32, msg: &mut Msg) -> Tried {
    msg.prepare_recv();
    let start = world.net.endpoints[endpoint as usize].received_bytes;
    let queue = world.unix.attached.entry(endpoint).or_default();
    // Descriptors whose first byte a plain receive took: closed, as Linux closes them for
    // a receive without a control buffer.
    let mut stale = Vec::new();
    while queue.front().is_some_and(|entry| entry.offset < start) {
        stale.extend(queue.pop_front().expect("checked").fds);
    }
    let limit = queue.front().map(|entry| entry.offset + entry.len - start);
    world.discard(stale);
    let (lens, n_bufs) = spare_lens(msg);
    let total: usize = lens.iter().sum::<usize>().min(i32::MAX as usize);
    let max = limit.map_or(total, |limit| total.min(limit as usize));
    let (mut buf_idx, mut at) = (0, 0);
    let got = world.recv(endpoint, max, &mut |bytes| {
        scatter(msg, &lens[..n_bufs], &mut buf_idx, &mut at, bytes);
    });
    let mut cut = false;
    if let Recv::Bytes(n) = got {
        let queue = world.unix.attached.entry(endpoint).or_default();
        if queue
            .front()
            .is_some_and(|entry| entry.offset < start + n as u64)
        {
            let entry = queue.pop_front().expect("checked");
            cut = world.hand_fds(msg, entry.fds);
        }
    }
    msg.sim_received_unix(false, cut);
    match got {
        Recv::Bytes(n) => Some((i32::try_from(n).expect("bounded by the buffers"), 0)),
        Recv::Eof => Some((0, 0)),
        Recv::Wait => None,
        Recv::Error(errno) => Some((errno, 0)),
    }
}

/// A send on a Unix datagram pair: one message, whole, after the ones before it.
fn send_dgram(world: &mut World, id: u32, msg: &Msg) -> Tried {
    if let Some(errno) = addressed(msg, false) {
        return Some((errno, 0));
    }
    send_parts(world, id, msg.send_bufs(), msg.fds())
}

/// One message of `parts`' bytes, with `fds`, after the ones before it.
fn send_parts<B: std::ops::Deref<Target = [u8]>>(
    world: &mut World,
    id: u32,
    parts: &[B],
    fds: &[OwnedFd],
) -> Tried {
    let end = &mut world.unix.dgrams[id as usize];
    let peer = end.peer;
    if end.refused {
        return Some((-libc::ENOTCONN, 0));
    }
    if !world.unix.dgrams[peer as usize].open {
        world.unix.dgrams[id as usize].refused = true;
        return Some((-libc::ECONNREFUSED, 0));
    }
    let len: usize = parts.iter().map(|part| part.len()).sum();
    let room = world.options.socket_buffer_bytes as usize;
    if len > room {
        return Some((-libc::EMSGSIZE, 0));
    }
    let to = &world.unix.dgrams[peer as usize];
    if !to.queue.is_empty() && to.queued_bytes + len > room {
        world.stats.sends_blocked += 1;
        return None;
    }
    let fds = match world.pass(fds) {
        Ok(passed) => passed,
        Err(errno) => return Some((errno, 0)),
    };
    let at_ns = world.now_ns() + world.latency_ns();
    let to = &mut world.unix.dgrams[peer as usize];
    let at_ns = at_ns.max(to.last_at_ns);
    to.last_at_ns = at_ns;
    to.queued_bytes += len;
    let mut bytes = Vec::with_capacity(len);
    for part in parts {
        bytes.extend_from_slice(part);
    }
    to.queue.push_back(Message { at_ns, bytes, fds });
    world.at(at_ns, Event::Wake);
    world.stats.bytes_sent += len as u64;
    world.trace.add(&[0xd8, u64::from(id), len as u64]);
    Some((i32::try_from(len).expect("bounded by the buffer size"), 0))
}

/// A receive on a Unix datagram pair: the next message due, cut to the buffers
/// (`MSG_TRUNC`), with its descriptors. Waits while none is due, also once the peer closed.
fn recv_dgram(world: &mut World, id: u32, msg: &mut Msg) -> Tried {
    msg.prepare_recv();
    let message = next_due(world, id)?;
    let (lens, n_bufs) = spare_lens(msg);
    let total: usize = lens.iter().sum();
    let n = message.bytes.len().min(total);
    let (mut buf_idx, mut at) = (0, 0);
    scatter(
        msg,
        &lens[..n_bufs],
        &mut buf_idx,
        &mut at,
        &message.bytes[..n],
    );
    world.stats.bytes_received += n as u64;
    world.trace.add(&[0xd9, u64::from(id), n as u64]);
    let cut = world.hand_fds(msg, message.fds);
    msg.sim_received_unix(n < message.bytes.len(), cut);
    Some((i32::try_from(n).expect("bounded by the buffers"), 0))
}

/// The next message due at Unix datagram end `id`, out of its queue.
fn next_due(world: &mut World, id: u32) -> Option<Message> {
    let now_ns = world.now_ns();
    let end = &mut world.unix.dgrams[id as usize];
    if end.queue.front().is_none_or(|m| m.at_ns > now_ns) {
        return None;
    }
    let message = end.queue.pop_front().expect("checked");
    end.queued_bytes -= message.bytes.len();
    Some(message)
}

/// A plain `recv`, `send` or vectored send on a Unix datagram pair, as on a connected
/// datagram socket: one message each (a receive keeps what fits its buffer and closes the
/// descriptors that came with the message, as Linux does without a control buffer).
/// `None`: not such an operation on such a socket.
pub(super) fn socket_op(world: &mut World, args: &mut Args) -> Option<Tried> {
    let (Args::Recv { fd, .. } | Args::Send { fd, .. } | Args::SendVectored { fd, .. }) = *args
    else {
        return None;
    };
    let Some(Obj::UnixDgram(id)) = world.obj(fd) else {
        return None;
    };
    Some(match args {
        Args::Send { buf, .. } => send_parts(world, id, &[&buf[..]], &[]),
        Args::SendVectored { bufs, .. } => {
            let n = bufs.len().min(crate::outbuf::GATHER_MAX);
            send_parts(world, id, &bufs[..n], &[])
        }
        Args::Recv { buf, .. } => {
            // Nothing due: the receive waits (`Some(None)`), it is still this module's.
            let Some(message) = next_due(world, id) else {
                return Some(None);
            };
            let spare = buf.spare_capacity_mut();
            let n = message.bytes.len().min(spare.len());
            for (slot, &byte) in spare.iter_mut().zip(&message.bytes[..n]) {
                slot.write(byte);
            }
            world.stats.bytes_received += n as u64;
            world.trace.add(&[0xd9, u64::from(id), n as u64]);
            world.discard(message.fds);
            Some((i32::try_from(n).expect("bounded by the buffer"), 0))
        }
        _ => unreachable!("matched above"),
    })
}

impl Sim {
    /// A connected pair of Unix sockets, like `socketpair(AF_UNIX, ...)`: a byte stream
    /// ([`UnixKind::Stream`], the world's streams: every stream operation works) or
    /// datagrams kept whole and in order ([`UnixKind::Datagram`]: [`crate::Io::sendmsg`] and
    /// [`crate::Io::recvmsg`], a datagram cut to the buffers reported as
    /// [`Msg::truncated`]; plain receives and sends too, one message each). Either passes
    /// descriptors with [`Msg::fds`]: see [`crate::sim`]'s "Unix sockets and descriptor
    /// passing".
    ///
    /// # Errors
    /// `EMFILE` past `SimOptions::descriptors_max`.
    ///
    /// # Examples
    /// A simulated socket passed over a simulated Unix datagram pair: the receiver gets a
    /// new descriptor naming the same socket, which works at once.
    /// ```
    /// use std::io;
    /// use std::os::fd::{AsRawFd, OwnedFd};
    /// use dispatch_loop::sim::{Sim, SimOptions, UnixKind};
    /// use dispatch_loop::{Io, Msg, Options};
    ///
    /// type Got = Option<Msg>;
    /// let sim = Sim::new(&SimOptions::new(1)).unwrap();
    /// let (a, b) = sim.unix_pair(UnixKind::Datagram).unwrap();
    /// let (passed, other_end) = sim.unix_pair(UnixKind::Stream).unwrap();
    /// let mut io: Io<Got> = Io::new_sim(&Options::new(8), &sim).unwrap();
    /// let mut msg = Msg::new(b"take this".to_vec()).with_fds(1);
    /// msg.fds_mut().push(passed); // the sender keeps it, open, in the message
    /// io.sendmsg(0, a.as_raw_fd(), msg, |_, io: &mut Io<Got>, _, (n, mut msg)| {
    ///     assert_eq!(n.unwrap(), 9);
    ///     // Closed through the loop, as every simulated descriptor is.
    ///     for fd in std::mem::take(msg.fds_mut()) {
    ///         io.close(9, fd, |_, _, _, closed| closed.unwrap()).unwrap();
    ///     }
    /// })
    /// .unwrap();
    /// let into = Msg::new(Vec::with_capacity(16)).with_fds(1);
    /// io.recvmsg(1, b.as_raw_fd(), into, |got: &mut Got, _, _, (n, msg)| {
    ///     assert_eq!(n.unwrap(), 9);
    ///     *got = Some(msg);
    /// })
    /// .unwrap();
    /// let mut got = None;
    /// io.run_until_idle(&mut got).unwrap();
    /// let mut msg = got.take().unwrap();
    /// assert!(!msg.control_truncated());
    /// let received: OwnedFd = msg.fds_mut().pop().unwrap();
    /// // The received descriptor names the same simulated socket: a send on it arrives.
    /// io.send(2, received.as_raw_fd(), b"hi".to_vec(), |_, _, _, (n, _)| {
    ///     assert_eq!(n.unwrap(), 2)
    /// })
    /// .unwrap();
    /// io.recv(3, other_end.as_raw_fd(), Vec::with_capacity(8), |_, _, _, (n, buf)| {
    ///     assert_eq!((n.unwrap(), &buf[..]), (2, &b"hi"[..]))
    /// })
    /// .unwrap();
    /// io.run_until_idle(&mut got).unwrap();
    /// for fd in [a, b, received, other_end] {
    ///     io.close(4, fd, |_, _, _, closed| closed.unwrap()).unwrap();
    /// }
    /// io.run_until_idle(&mut got).unwrap();
    /// assert_eq!(sim.open_descriptors(), 0, "nothing leaks");
    /// # Ok::<(), io::Error>(())
    /// ```
    pub fn unix_pair(&self, kind: UnixKind) -> io::Result<(OwnedFd, OwnedFd)> {
        let mut world = self.world.borrow_mut();
        let (a, b) = world
            .unix_pair(kind)
            .map_err(io::Error::from_raw_os_error)?;
        let first = match world.new_fd(a) {
            Ok(fd) => fd,
            Err(errno) => {
                world.release(a);
                world.release(b);
                return Err(io::Error::from_raw_os_error(errno));
            }
        };
        match world.new_fd(b) {
            Ok(second) => Ok((first, second)),
            Err(errno) => {
                world.close_fd(first.as_raw_fd());
                world.release(b);
                Err(io::Error::from_raw_os_error(errno))
            }
        }
    }
}
