//! The HTTP/1.1 request side of the `http` example: framing, not I/O. `httparse` parses each
//! request head, chunk-size line and trailer section; this module decides what the head
//! means for the connection (route, keep-alive, how long the body is) and walks through the
//! body, which it counts and discards, so that the next pipelined request starts at the
//! right byte. It holds no bytes: [`step`] reads from whatever slice the caller has (a pool
//! buffer, or the connection's input buffer) and says how much it used.

use httparse::Status;

/// The longest request head (request line and headers), and the longest chunk-size line or
/// trailer section, in bytes: a longer one is answered `431` (`400` for a chunk-size line).
pub const HEAD_MAX: usize = 8 * 1024;
/// The most headers a request head (or a trailer section) may have: more is answered `431`.
pub const HEADERS_MAX: usize = 64;
/// The longest request body, in bytes: a longer one is answered `413`.
pub const BODY_MAX: u64 = 1024 * 1024;

/// What a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `GET /plaintext`.
    Plaintext,
    /// `GET /json`.
    Json,
    /// `POST /count`: answers how many body bytes came (after decoding a chunked body).
    Count,
    /// Anything else: `404`.
    NotFound,
}

/// Whether, and how, the connection stays open after the reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Persist {
    /// HTTP/1.1's default: open, nothing to say.
    KeepAlive,
    /// An HTTP/1.0 client that asked for keep-alive: open, and the reply says so.
    KeepAlive10,
    /// `Connection: close`, or HTTP/1.0 without keep-alive: closed after the reply.
    Close,
}

/// The requests the server refuses, each answered and followed by a close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `400`: the request cannot be parsed, its framing is ambiguous, or it lacks a `Host`.
    BadRequest,
    /// `408`: the request was not complete within the request timeout.
    Timeout,
    /// `413`: the body is longer than [`BODY_MAX`].
    BodyTooLarge,
    /// `431`: the head is longer than [`HEAD_MAX`], or has more than [`HEADERS_MAX`] headers.
    HeadTooLarge,
}

/// A request whose head was parsed: what it asked for, and its body bytes so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    pub route: Route,
    pub persist: Persist,
    pub body_len: u64,
}

/// Where a connection's input stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Between requests, or inside a head that has not all come yet.
    Head,
    /// Inside a `Content-Length` body, `left` bytes to go.
    Body { left: u64, request: Request },
    /// Before a chunk-size line of a chunked body.
    ChunkSize { request: Request },
    /// Inside a chunk's data, `left` bytes to go.
    ChunkData { left: u64, request: Request },
    /// After a chunk's data: its CRLF.
    ChunkEnd { request: Request },
    /// After the last chunk: the trailer section, up to its empty line.
    Trailers { request: Request },
}

/// What one [`step`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// `n` bytes of framing or body, taken: nothing to answer yet.
    Used(usize),
    /// A head of `n` bytes asked for `100 Continue` before its body: send it now.
    Continue(usize),
    /// The request ended after `n` more bytes: answer it.
    Complete(usize, Request),
    /// Nothing more can be parsed until more bytes come.
    More,
    /// Refuse the request (and close the connection).
    Refuse(Refusal),
}

/// How a request's body is delimited.
enum Framing {
    Length(u64),
    Chunked,
}

/// Parses as much of `bytes` as one step of `phase` takes, and moves `phase` on.
/// Nothing is parsed from no bytes: `More`.
pub fn step(phase: &mut Phase, bytes: &[u8]) -> Event {
    if bytes.is_empty() {
        return Event::More;
    }
    match *phase {
        Phase::Head => head_step(phase, bytes),
        Phase::Body { left, request } => {
            let (taken, request) = take(left, request, bytes);
            if taken == left {
                *phase = Phase::Head;
                return Event::Complete(taken as usize, request);
            }
            *phase = Phase::Body {
                left: left - taken,
                request,
            };
            Event::Used(taken as usize)
        }
        Phase::ChunkSize { request } => chunk_size_step(phase, request, bytes),
        Phase::ChunkData { left, request } => {
            let (taken, request) = take(left, request, bytes);
            *phase = match taken == left {
                true => Phase::ChunkEnd { request },
                false => Phase::ChunkData {
                    left: left - taken,
                    request,
                },
            };
            Event::Used(taken as usize)
        }
        Phase::ChunkEnd { request } => match bytes {
            [b'\r', b'\n', ..] => {
                *phase = Phase::ChunkSize { request };
                Event::Used(2)
            }
            [b'\r'] => Event::More,
            _ => Event::Refuse(Refusal::BadRequest),
        },
        Phase::Trailers { request } => trailers_step(phase, request, bytes),
    }
}

/// Takes up to `left` body bytes of `bytes`.
fn take(left: u64, mut request: Request, bytes: &[u8]) -> (u64, Request) {
    assert!(left > 0, "a body phase has bytes to go");
    assert!(!bytes.is_empty(), "step waits for bytes");
    let taken = left.min(bytes.len() as u64);
    request.body_len += taken;
    (taken, request)
}

fn head_step(phase: &mut Phase, bytes: &[u8]) -> Event {
    let (n, request, framing, expect_continue) = match parse_head(bytes) {
        Ok(Some(head)) => head,
        Ok(None) => return Event::More,
        Err(refusal) => return Event::Refuse(refusal),
    };
    assert!(n > 0 && n <= bytes.len());
    *phase = match framing {
        Framing::Length(0) => return Event::Complete(n, request),
        Framing::Length(left) => Phase::Body { left, request },
        Framing::Chunked => Phase::ChunkSize { request },
    };
    match expect_continue {
        true => Event::Continue(n),
        false => Event::Used(n),
    }
}

/// A parsed head: its length, the request, its body's framing, and whether the client waits
/// for `100 Continue` before sending the body. `None`: the head has not all come yet.
type Head = (usize, Request, Framing, bool);

fn parse_head(bytes: &[u8]) -> Result<Option<Head>, Refusal> {
    let mut headers = [httparse::EMPTY_HEADER; HEADERS_MAX];
    let mut parsed = httparse::Request::new(&mut headers);
    let n = match parsed.parse(bytes) {
        Ok(Status::Complete(n)) if n <= HEAD_MAX => n,
        Ok(Status::Partial) if bytes.len() < HEAD_MAX => return Ok(None),
        Ok(_) | Err(httparse::Error::TooManyHeaders) => return Err(Refusal::HeadTooLarge),
        Err(_) => return Err(Refusal::BadRequest),
    };
    let fields = Fields::read(parsed.headers)?;
    let http10 = parsed.version == Some(0);
    // RFC 9112 section 3.2: an HTTP/1.1 request has exactly one Host (HTTP/1.0 at most one).
    if fields.hosts > 1 || (fields.hosts == 0 && !http10) {
        return Err(Refusal::BadRequest);
    }
    let framing = match (fields.transfer_encoding, fields.content_length) {
        (None, length) => Framing::Length(length.unwrap_or(0)),
        // RFC 9112 section 6.1: only a final `chunked` delimits a request body; with a
        // Content-Length beside it, or in HTTP/1.0, the framing is ambiguous (the stuff of
        // request smuggling): refused.
        (Some(true), None) if !http10 => Framing::Chunked,
        (Some(_), _) => return Err(Refusal::BadRequest),
    };
    if matches!(framing, Framing::Length(length) if length > BODY_MAX) {
        return Err(Refusal::BodyTooLarge);
    }
    let persist = match (fields.close, fields.keep_alive, http10) {
        (true, _, _) | (false, false, true) => Persist::Close,
        (false, true, true) => Persist::KeepAlive10,
        (false, _, false) => Persist::KeepAlive,
    };
    let method = parsed.method.expect("a complete head has a method");
    let target = parsed.path.expect("a complete head has a target");
    let path = target.split_once('?').map_or(target, |(path, _query)| path);
    let route = match (method, path) {
        ("GET", "/plaintext") => Route::Plaintext,
        ("GET", "/json") => Route::Json,
        ("POST", "/count") => Route::Count,
        _ => Route::NotFound,
    };
    let request = Request {
        route,
        persist,
        body_len: 0,
    };
    let has_body = !matches!(framing, Framing::Length(0));
    Ok(Some((
        n,
        request,
        framing,
        fields.expect_continue && has_body,
    )))
}

/// What the headers of one request say about its connection and body.
#[derive(Default)]
struct Fields {
    content_length: Option<u64>,
    /// Whether `Transfer-Encoding` came, and if so whether its last coding is `chunked`.
    transfer_encoding: Option<bool>,
    close: bool,
    keep_alive: bool,
    expect_continue: bool,
    /// `Host` headers seen.
    hosts: u32,
}

impl Fields {
    fn read(headers: &[httparse::Header<'_>]) -> Result<Fields, Refusal> {
        let mut fields = Fields::default();
        for header in headers {
            let name = header.name;
            let value = header.value.trim_ascii();
            if name.eq_ignore_ascii_case("content-length") {
                let length = decimal(value).ok_or(Refusal::BadRequest)?;
                // Repeated with another value: which one is right cannot be known.
                if fields
                    .content_length
                    .is_some_and(|earlier| earlier != length)
                {
                    return Err(Refusal::BadRequest);
                }
                fields.content_length = Some(length);
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                // Several headers make one list; its last coding is the last header's last.
                let last = tokens(value).last().unwrap_or_default();
                fields.transfer_encoding = Some(last.eq_ignore_ascii_case(b"chunked"));
            } else if name.eq_ignore_ascii_case("connection") {
                for token in tokens(value) {
                    fields.close |= token.eq_ignore_ascii_case(b"close");
                    fields.keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
                }
            } else if name.eq_ignore_ascii_case("host") {
                fields.hosts += 1;
            } else if name.eq_ignore_ascii_case("expect") {
                fields.expect_continue |= value.eq_ignore_ascii_case(b"100-continue");
            }
        }
        Ok(fields)
    }
}

/// The comma-separated elements of a header value, trimmed (empty ones left out).
fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&byte| byte == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|token| !token.is_empty())
}

/// A `Content-Length` value: digits only (no sign, no spaces), at most 19 of them.
fn decimal(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

fn chunk_size_step(phase: &mut Phase, request: Request, bytes: &[u8]) -> Event {
    // httparse reads an empty size as 0, the last chunk: a size has at least one digit.
    if bytes.first().is_some_and(|byte| !byte.is_ascii_hexdigit()) {
        return Event::Refuse(Refusal::BadRequest);
    }
    match httparse::parse_chunk_size(bytes) {
        Ok(Status::Complete((n, 0))) => {
            *phase = Phase::Trailers { request };
            Event::Used(n)
        }
        Ok(Status::Complete((n, size))) => {
            if request.body_len.saturating_add(size) > BODY_MAX {
                return Event::Refuse(Refusal::BodyTooLarge);
            }
            *phase = Phase::ChunkData {
                left: size,
                request,
            };
            Event::Used(n)
        }
        // A chunk extension may be long, not endless.
        Ok(Status::Partial) if bytes.len() < HEAD_MAX => Event::More,
        Ok(Status::Partial) | Err(httparse::InvalidChunkSize) => Event::Refuse(Refusal::BadRequest),
    }
}

fn trailers_step(phase: &mut Phase, request: Request, bytes: &[u8]) -> Event {
    let mut headers = [httparse::EMPTY_HEADER; HEADERS_MAX];
    match httparse::parse_headers(bytes, &mut headers) {
        // Trailer fields are read and ignored: nothing here depends on them.
        Ok(Status::Complete((n, _))) if n <= HEAD_MAX => {
            *phase = Phase::Head;
            Event::Complete(n, request)
        }
        Ok(Status::Partial) if bytes.len() < HEAD_MAX => Event::More,
        Ok(_) | Err(httparse::Error::TooManyHeaders) => Event::Refuse(Refusal::HeadTooLarge),
        Err(_) => Event::Refuse(Refusal::BadRequest),
    }
}

#[cfg(test)]
#[path = "request_tests.rs"]
mod tests;
