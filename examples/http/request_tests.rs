//! The request framing on byte streams: a pipelined stream of every kind of request gives
//! the same answers however it is split into arrivals (at every byte, in two at every
//! place), and each refusal comes from the input that should cause it.

use super::{step, Event, Persist, Phase, Refusal, Request, Route, BODY_MAX, HEAD_MAX};

/// What the server does for a stream, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Continue,
    Answer(Route, Persist, u64),
    Refuse(Refusal),
}

/// Feeds `arrivals` as a connection would: bytes a step leaves wait, with the next arrival
/// appended, for the next step.
fn check(arrivals: &[&[u8]]) -> Vec<Outcome> {
    let mut phase = Phase::Head;
    let mut input = Vec::new();
    let mut outcomes = Vec::new();
    for arrival in arrivals {
        input.extend_from_slice(arrival);
        let mut used = 0;
        loop {
            match step(&mut phase, &input[used..]) {
                Event::Used(n) => used += n,
                Event::Continue(n) => {
                    used += n;
                    outcomes.push(Outcome::Continue);
                }
                Event::Complete(
                    n,
                    Request {
                        route,
                        persist,
                        body_len,
                    },
                ) => {
                    used += n;
                    outcomes.push(Outcome::Answer(route, persist, body_len));
                }
                Event::More => break,
                Event::Refuse(refusal) => {
                    outcomes.push(Outcome::Refuse(refusal));
                    return outcomes;
                }
            }
            assert!(used <= input.len());
        }
        input.drain(..used);
    }
    outcomes
}

const PIPELINE: &[u8] = b"GET /plaintext HTTP/1.1\r\nHost: a\r\n\r\n\
POST /count HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello\
POST /count HTTP/1.1\r\nhost: a\r\nTransfer-Encoding: gzip, chunked\r\n\
Expect: 100-continue\r\n\r\n\
5;ext=1\r\nhello\r\n10\r\n0123456789abcdef\r\n0\r\nTrailer: x\r\n\r\n\
GET /json?x=1 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n\
GET /nope HTTP/1.1\r\nHost: a\r\nConnection: Keep-Alive, close\r\n\r\n";

fn pipeline_outcomes() -> Vec<Outcome> {
    vec![
        Outcome::Answer(Route::Plaintext, Persist::KeepAlive, 0),
        Outcome::Answer(Route::Count, Persist::KeepAlive, 5),
        Outcome::Continue,
        Outcome::Answer(Route::Count, Persist::KeepAlive, 21),
        Outcome::Answer(Route::Json, Persist::KeepAlive10, 0),
        Outcome::Answer(Route::NotFound, Persist::Close, 0),
    ]
}

#[test]
fn a_pipeline_in_one_arrival() {
    assert_eq!(check(&[PIPELINE]), pipeline_outcomes());
}

#[test]
fn a_pipeline_split_anywhere() {
    for at in 0..=PIPELINE.len() {
        let (first, second) = PIPELINE.split_at(at);
        assert_eq!(
            check(&[first, second]),
            pipeline_outcomes(),
            "split at {at}"
        );
    }
    let bytes: Vec<&[u8]> = PIPELINE.chunks(1).collect();
    assert_eq!(check(&bytes), pipeline_outcomes());
}

#[test]
fn http10_closes_unless_asked() {
    let outcomes = check(&[b"GET /json HTTP/1.0\r\n\r\n"]);
    assert_eq!(outcomes, [Outcome::Answer(Route::Json, Persist::Close, 0)]);
}

fn refusal(input: &[u8]) -> Option<Refusal> {
    match check(&[input]).last() {
        Some(Outcome::Refuse(refusal)) => Some(*refusal),
        _ => None,
    }
}

#[test]
fn malformed_and_ambiguous_requests_are_bad() {
    let bad: &[&[u8]] = &[
        b"\x01\x02\x03 nonsense\r\n\r\n",
        b"GET /plaintext HTTP/1.1\r\nHost: a\r\nNo colon here\r\n\r\n",
        b"GET /plaintext HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n",
        b"GET /plaintext HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
        b"POST /count HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\
          Transfer-Encoding: chunked\r\n\r\n",
        b"POST /count HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
        b"POST /count HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST /count HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"POST /count HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\r\n",
        b"POST /count HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\r\naXY",
        b"GET /plaintext HTTP/1.1\r\n\r\n",
        b"GET /plaintext HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    ];
    for input in bad {
        let shown = String::from_utf8_lossy(input);
        assert_eq!(refusal(input), Some(Refusal::BadRequest), "{shown}");
    }
}

#[test]
fn heads_over_the_limits_are_too_large() {
    let many: String = (0..65).map(|i| format!("X-{i}: y\r\n")).collect();
    let many = format!("GET / HTTP/1.1\r\nHost: a\r\n{many}\r\n");
    assert_eq!(refusal(many.as_bytes()), Some(Refusal::HeadTooLarge));
    let long = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nX: {}\r\n\r\n",
        "y".repeat(HEAD_MAX)
    );
    assert_eq!(refusal(long.as_bytes()), Some(Refusal::HeadTooLarge));
    // Unfinished, and already past the limit.
    let unfinished = format!("GET / HTTP/1.1\r\nHost: a\r\nX: {}", "y".repeat(HEAD_MAX));
    assert_eq!(refusal(unfinished.as_bytes()), Some(Refusal::HeadTooLarge));
    // Just under it, and unfinished: more is awaited.
    let under = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nX: {}",
        "y".repeat(HEAD_MAX - 100)
    );
    assert_eq!(check(&[under.as_bytes()]), []);
}

const CHUNKED: &str = "POST /count HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";

#[test]
fn bodies_over_the_limit_are_too_large() {
    let long = format!(
        "POST /count HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n",
        BODY_MAX + 1
    );
    assert_eq!(refusal(long.as_bytes()), Some(Refusal::BodyTooLarge));
    let chunk = format!("{CHUNKED}{BODY_MAX:x}\r\n");
    assert_eq!(
        check(&[chunk.as_bytes()]),
        [],
        "exactly the limit is allowed"
    );
    let over = format!("{:x}\r\n", BODY_MAX + 1);
    let over = format!("{CHUNKED}{over}");
    assert_eq!(refusal(over.as_bytes()), Some(Refusal::BodyTooLarge));
}

#[test]
fn a_body_at_the_limit_is_counted() {
    let head = format!("POST /count HTTP/1.1\r\nHost: a\r\nContent-Length: {BODY_MAX}\r\n\r\n");
    let body = vec![b'x'; BODY_MAX as usize];
    let outcomes = check(&[head.as_bytes(), &body[..1000], &body[1000..]]);
    assert_eq!(
        outcomes,
        [Outcome::Answer(Route::Count, Persist::KeepAlive, BODY_MAX)]
    );
}
