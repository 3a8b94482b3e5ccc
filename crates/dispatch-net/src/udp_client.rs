//! A UDP request/response client: one request at a time to one server, sent again when no
//! response comes within a deadline (`Io::set_deadline` on the receive), up to a number of
//! tries, the response (or why none came) handed to the program's [`UdpClientHandler`].
//! A program may run many clients on one loop: each is numbered ([`UdpClient::with_id`]),
//! its operations carry its number in their tags, and the handler finds it by number
//! ([`UdpClientHandler::udp_client_by_id`]).
//! The request and response messages are made once, so a request allocates nothing while
//! it fits the room it had before.
//!
//! A datagram from another address (or truncated) is not the response: it is counted in
//! [`UdpClientStats::strays`] and the receive goes on, with a fresh deadline, at most
//! [`STRAYS_PER_TRY_MAX`] times a try (so a flood of strays cannot hold a try open
//! forever). A response to an earlier try that arrives during a later one is taken as the
//! response: requests are meant to be idempotent, as DNS's are, and a program that must tell
//! tries apart puts an id in its request. A response to an earlier *request* (a duplicate,
//! or the answer to a retry that came after the first answer) would be taken the same way;
//! a program whose requests carry an id rejects those in
//! [`UdpClientHandler::is_response`], and they count as strays.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};

use dispatch_loop::{Io, Msg, Tag};

/// The tags of client `id`'s send and receive (each has its own callback): `2 * id` and
/// `2 * id + 1`, so that client 0's are 0 and 1.
const fn send_tag(id: u32) -> Tag {
    2 * id as Tag
}

const fn recv_tag(id: u32) -> Tag {
    2 * id as Tag + 1
}

/// The client whose operation carries `tag`.
fn id_of(tag: Tag) -> u32 {
    u32::try_from(tag / 2).expect("a client's tag")
}

/// Datagrams not from the server a try takes and waits on after (each with a fresh
/// deadline); the next one ends the try as timed out, and is counted in
/// [`UdpClientStats::strays`] too, so a flooded try counts `STRAYS_PER_TRY_MAX + 1`.
pub const STRAYS_PER_TRY_MAX: u32 = 16;

/// How a [`request`] waits and retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RequestOptions {
    /// How long each try waits for the response (at least 1).
    pub timeout_ns: u64,
    /// Tries in all, the first included (at least 1).
    pub tries_max: u32,
    /// The largest response taken, in bytes; a longer one is a stray.
    pub response_size_max: u32,
}

impl RequestOptions {
    /// Tries of `timeout_ns` each, `tries_max` in all, responses of up to 1,500 bytes.
    pub const fn new(timeout_ns: u64, tries_max: u32) -> RequestOptions {
        RequestOptions {
            timeout_ns,
            tries_max,
            response_size_max: 1500,
        }
    }

    /// The `Options::ops_max` the client needs: a send or a receive at a time.
    pub const fn ops_max(&self) -> u32 {
        1
    }
}

/// What a [`UdpClient`] did, since it was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct UdpClientStats {
    /// Requests made.
    pub requests: u64,
    /// Responses handed on.
    pub responses: u64,
    /// Tries after the first.
    pub retries: u64,
    /// Requests that got no response after every try.
    pub timeouts: u64,
    /// Datagrams that were not the response (another sender, truncated).
    pub strays: u64,
    /// Requests that failed otherwise (the send's error, no free slot).
    pub errors: u64,
}

/// Why [`request`] refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RequestError {
    /// A request is under way: one at a time.
    Busy,
}

impl std::fmt::Display for RequestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a request is under way on this UdpClient (one at a time)")
    }
}

impl std::error::Error for RequestError {}

/// The client's state: its socket, the server, the messages, the try under way.
#[derive(Debug)]
pub struct UdpClient {
    /// Its number among the program's clients (0 for a program with one).
    id: u32,
    socket: OwnedFd,
    server: SocketAddr,
    /// The request's message, while no send has it.
    request: Option<Msg>,
    /// The response's message, while no receive has it.
    response: Option<Msg>,
    busy: bool,
    tries: u32,
    strays: u32,
    options: RequestOptions,
    stats: UdpClientStats,
}

/// A program with a [`UdpClient`]: the loop's context implements it.
pub trait UdpClientHandler: Sized + 'static {
    /// The client inside the program's state.
    fn udp_client(&mut self) -> &mut UdpClient;

    /// The response to the request (its bytes in `bufs()[0]`), or why none came:
    /// `TimedOut` after every try, the send's error (`ECONNREFUSED` on a connected socket
    /// after an ICMP port unreachable, `EMSGSIZE`), or no free slot. The next [`request`]
    /// may be made from here.
    fn on_response(&mut self, io: &mut Io<Self>, response: io::Result<&Msg>);

    /// Client `id` ([`UdpClient::with_id`]). A program with one client keeps this default,
    /// which is [`UdpClientHandler::udp_client`]; a program with many implements it (and
    /// [`UdpClientHandler::on_response_by_id`]).
    fn udp_client_by_id(&mut self, id: u32) -> &mut UdpClient {
        let client = self.udp_client();
        assert_eq!(
            client.id, id,
            "one client: override udp_client_by_id for more"
        );
        client
    }

    /// Whether `response` (from the server, not truncated) answers client `id`'s `request`;
    /// one that does not is a stray and the receive goes on. The default takes every
    /// datagram from the server: a program whose requests carry an id (and whose server
    /// echoes it) checks it here, so that a late answer to an earlier request is not taken
    /// for this one's.
    fn is_response(&mut self, id: u32, request: &Msg, response: &Msg) -> bool {
        let _ = (id, request, response);
        true
    }

    /// Client `id`'s response, or why none came; the default hands it to
    /// [`UdpClientHandler::on_response`].
    fn on_response_by_id(&mut self, io: &mut Io<Self>, id: u32, response: io::Result<&Msg>) {
        let _ = id;
        self.on_response(io, response);
    }
}

impl UdpClient {
    /// A client sending from `socket` (a UDP socket, or a simulated one) to `server`.
    ///
    /// # Panics
    /// When `options.timeout_ns` or `options.tries_max` is 0.
    pub fn new(socket: impl Into<OwnedFd>, server: SocketAddr, options: &RequestOptions) -> Self {
        assert!(options.timeout_ns > 0, "a try waits for its response");
        assert!(options.tries_max > 0, "a request is tried");
        let size = options.response_size_max as usize;
        UdpClient {
            id: 0,
            socket: socket.into(),
            server,
            request: Some(Msg::new(Vec::new())),
            response: Some(Msg::new(Vec::with_capacity(size))),
            busy: false,
            tries: 0,
            strays: 0,
            options: *options,
            stats: UdpClientStats::default(),
        }
    }

    /// The same client numbered `id`, for a program running many on one loop: its
    /// operations' tags are `2 * id` and `2 * id + 1`, and
    /// [`UdpClientHandler::udp_client_by_id`] finds it by that number.
    ///
    /// # Panics
    /// When `id` is above `u32::MAX / 2` (its tags would not fit).
    #[must_use]
    pub fn with_id(mut self, id: u32) -> Self {
        assert!(id <= u32::MAX / 2, "a client's number fits its tags");
        self.id = id;
        self
    }

    /// Its socket, out of the client (to close it through the loop, as a simulated socket
    /// needs).
    ///
    /// # Panics
    /// While a request is under way (the loop's operations use the socket).
    pub fn into_socket(self) -> OwnedFd {
        assert!(!self.busy, "no request under way");
        self.socket
    }

    /// Its number ([`UdpClient::with_id`]).
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Whether a request is under way.
    pub fn is_busy(&self) -> bool {
        self.busy
    }

    /// Counters so far.
    pub fn stats(&self) -> UdpClientStats {
        self.stats
    }
}

/// Sends `bytes` as one datagram to the client's server and waits for the response,
/// sending again after each [`RequestOptions::timeout_ns`] without one, up to
/// [`RequestOptions::tries_max`] tries; [`UdpClientHandler::on_response`] gets the result.
///
/// # Errors
/// [`RequestError::Busy`] while a request is under way.
pub fn request<H: UdpClientHandler>(
    ctx: &mut H,
    io: &mut Io<H>,
    bytes: &[u8],
) -> Result<(), RequestError> {
    let id = ctx.udp_client().id;
    request_by_id(ctx, io, id, bytes)
}

/// [`request`] by client `id` ([`UdpClient::with_id`]), for a program with many clients.
///
/// # Errors
/// [`RequestError::Busy`] while a request of that client is under way.
pub fn request_by_id<H: UdpClientHandler>(
    ctx: &mut H,
    io: &mut Io<H>,
    id: u32,
    bytes: &[u8],
) -> Result<(), RequestError> {
    let client = ctx.udp_client_by_id(id);
    assert_eq!(
        client.id, id,
        "udp_client_by_id finds the client numbered id"
    );
    if client.busy {
        return Err(RequestError::Busy);
    }
    client.busy = true;
    client.tries = 0;
    client.stats.requests += 1;
    let msg = client
        .request
        .as_mut()
        .expect("no send in flight while idle");
    let bufs = msg.bufs_mut();
    bufs.truncate(1);
    if bufs.is_empty() {
        bufs.push(Vec::new());
    }
    bufs[0].clear();
    bufs[0].extend_from_slice(bytes);
    try_send(ctx, io, id);
    Ok(())
}

fn try_send<H: UdpClientHandler>(ctx: &mut H, io: &mut Io<H>, id: u32) {
    let client = ctx.udp_client_by_id(id);
    client.tries += 1;
    client.strays = 0;
    let msg = client.request.take().expect("the request between tries");
    let fd = client.socket.as_raw_fd();
    if let Err(error) = io.send_to(send_tag(id), fd, msg, client.server, on_sent::<H>) {
        client.request = Some(error.value);
        let error = io::Error::other(error.kind.to_string());
        finish(ctx, io, id, Err(error));
    }
}

fn on_sent<H: UdpClientHandler>(
    ctx: &mut H,
    io: &mut Io<H>,
    tag: Tag,
    (result, msg): (io::Result<usize>, Msg),
) {
    let id = id_of(tag);
    ctx.udp_client_by_id(id).request = Some(msg);
    match result {
        Ok(_) => arm_recv(ctx, io, id),
        Err(error) => finish(ctx, io, id, Err(error)),
    }
}

fn arm_recv<H: UdpClientHandler>(ctx: &mut H, io: &mut Io<H>, id: u32) {
    let client = ctx.udp_client_by_id(id);
    let mut msg = client.response.take().expect("one receive at a time");
    let size = client.options.response_size_max as usize;
    let bufs = msg.bufs_mut();
    bufs.truncate(1);
    if bufs.is_empty() || bufs[0].capacity() != size {
        bufs.clear();
        bufs.push(Vec::with_capacity(size));
    }
    bufs[0].clear();
    let fd = client.socket.as_raw_fd();
    match io.recv_from(recv_tag(id), fd, msg, on_recv::<H>) {
        Ok(op) => {
            let timeout = client.options.timeout_ns;
            io.set_deadline(op, timeout).expect("just scheduled");
        }
        Err(error) => {
            client.response = Some(error.value);
            let error = io::Error::other(error.kind.to_string());
            finish(ctx, io, id, Err(error));
        }
    }
}

fn on_recv<H: UdpClientHandler>(
    ctx: &mut H,
    io: &mut Io<H>,
    tag: Tag,
    (result, msg): (io::Result<usize>, Msg),
) {
    let id = id_of(tag);
    let client = ctx.udp_client_by_id(id);
    let from_server = msg.peer() == Some(client.server) && !msg.truncated();
    let request = client
        .request
        .take()
        .expect("the request while its response is awaited");
    let from_server = from_server && result.is_ok() && ctx.is_response(id, &request, &msg);
    let client = ctx.udp_client_by_id(id);
    client.request = Some(request);
    client.response = Some(msg);
    match result {
        Ok(_) if from_server => {
            client.stats.responses += 1;
            let msg = client.response.take().expect("just kept");
            finish(ctx, io, id, Ok(&msg));
            let client = ctx.udp_client_by_id(id);
            if client.response.is_none() {
                client.response = Some(msg);
            }
        }
        Ok(_) if client.strays < STRAYS_PER_TRY_MAX => {
            client.strays += 1;
            client.stats.strays += 1;
            arm_recv(ctx, io, id);
        }
        Ok(_) => {
            client.stats.strays += 1;
            timed_out(ctx, io, id);
        }
        Err(error) if error.raw_os_error() == Some(libc::ETIMEDOUT) => timed_out(ctx, io, id),
        Err(error) => finish(ctx, io, id, Err(error)),
    }
}

/// A try got no response: the next try, or the request's end.
fn timed_out<H: UdpClientHandler>(ctx: &mut H, io: &mut Io<H>, id: u32) {
    let client = ctx.udp_client_by_id(id);
    if client.tries < client.options.tries_max {
        client.stats.retries += 1;
        return try_send(ctx, io, id);
    }
    client.stats.timeouts += 1;
    let error = io::Error::new(io::ErrorKind::TimedOut, "no response after every try");
    finish(ctx, io, id, Err(error));
}

/// The request is over: the handler hears how.
fn finish<H: UdpClientHandler>(ctx: &mut H, io: &mut Io<H>, id: u32, response: io::Result<&Msg>) {
    let client = ctx.udp_client_by_id(id);
    assert!(client.busy, "a request ends once");
    client.busy = false;
    if response
        .as_ref()
        .is_err_and(|e| e.kind() != io::ErrorKind::TimedOut)
    {
        client.stats.errors += 1;
    }
    ctx.on_response_by_id(io, id, response);
}
