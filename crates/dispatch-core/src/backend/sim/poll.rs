//! Polls ([`crate::Io::poll`]) on the simulator, for its own objects: a connection's end is
//! readable with bytes delivered, at the end of stream or with a reset to report, writable
//! with room toward its peer, hung up once the peer's end of stream arrived; a listener is
//! readable with a connection in its backlog; a datagram socket readable with a datagram
//! due and always writable; a file is always ready. A poll waits among
//! the waiting operations (blocking none: it consumes nothing) and is tried again whenever
//! they are, in order with them, so it sees what the operations scheduled before it left.

use std::os::fd::RawFd;

use super::socket::bad;
use super::world::{Obj, World};
use super::Tried;
use crate::poll::native_result;

/// Tries a poll of `fd` for `poll(2)` `events`: the events that fired, or `None` to wait.
pub(super) fn poll(world: &World, fd: RawFd, events: u32) -> Tried {
    let revents = match world.obj(fd) {
        None | Some(Obj::Dead) => return Some((bad(world, fd), 0)),
        Some(Obj::Stream(endpoint)) => world.poll_endpoint(endpoint),
        Some(Obj::Listener(listener)) if world.can_accept(listener) => libc::POLLIN,
        Some(Obj::Listener(_)) => 0,
        // Linux reports a stream socket that is neither connected nor listening as writable
        // and hung up.
        Some(Obj::Unbound(_)) => libc::POLLOUT | libc::POLLHUP,
        // A regular file is always ready, as for `poll(2)`.
        Some(Obj::File(_)) => libc::POLLIN | libc::POLLOUT,
        // A datagram socket: readable with a datagram due, and always writable (a send
        // never waits in the simulator: a datagram is queued or lost).
        Some(Obj::Datagram(id)) if world.udp_readable(id) => libc::POLLIN | libc::POLLOUT,
        Some(Obj::Datagram(_)) => libc::POLLOUT,
        Some(Obj::UnixDgram(id)) => world.unix_dgram_poll(id),
    };
    native_result(events, revents).map(|result| (result, 0))
}
