//! Polls ([`crate::Io::poll`]) on the simulator, for its own objects: a connection's end is
//! readable with bytes delivered, at the end of stream or with a reset to report, writable
//! with room toward its peer, hung up once the peer's end of stream arrived; a listener is
//! readable with a connection in its backlog; a file is always ready. A poll waits among
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
        Some(obj) if always_ready(obj) => libc::POLLIN | libc::POLLOUT,
        // An object the simulator cannot poll yet (none today; a kind added later answers
        // this until it says what ready means for it).
        Some(_) => return Some((-libc::EOPNOTSUPP, 0)),
    };
    native_result(events, revents).map(|result| (result, 0))
}

/// Whether `obj` is always ready, as a regular file is for `poll(2)`.
fn always_ready(obj: Obj) -> bool {
    matches!(obj, Obj::File(_))
}
