//! Random sequences of pooled and plain receives, peer writes, cancels, held buffers and
//! drops, on three socket pairs, against a model that counts pool buffers: every byte a
//! peer writes reaches exactly one callback of its own stream, in order; each receive gets
//! exactly one final callback; a dry pool makes receives wait, never fail; every buffer is
//! accounted for (`Io::pool_buffers_lent` equals the handles the test holds); dropping the
//! loop with receives in flight is clean.

use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;

use dispatch_loop::{BufResult, Io, OpId, Options, PoolBuf, PoolOptions, Shot, Tag};
use proptest::prelude::*;

use crate::check;

const PAIRS: usize = 3;
const BUFFERS: u32 = 4;
const BUFFER_SIZE: u32 = 16;

#[derive(Debug, Clone)]
enum Step {
    /// The peer of `pair` writes `len` bytes.
    Write {
        pair: usize,
        len: usize,
    },
    /// Starts a receive on `pair` if none is active: pooled multishot, pooled once, or a
    /// plain receive into a `Vec`.
    Receive {
        pair: usize,
        kind: u8,
    },
    /// Cancels the receive active on `pair`, if any.
    Cancel {
        pair: usize,
    },
    /// From now on, callbacks keep (or stop keeping) the buffers they get.
    Hold(bool),
    /// Drops every held buffer.
    Release,
    Tick,
    RunForUs(u16),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0..PAIRS, 1..40_usize).prop_map(|(pair, len)| Step::Write { pair, len }),
        3 => (0..PAIRS, 0..3_u8).prop_map(|(pair, kind)| Step::Receive { pair, kind }),
        1 => (0..PAIRS).prop_map(|pair| Step::Cancel { pair }),
        1 => any::<bool>().prop_map(Step::Hold),
        1 => Just(Step::Release),
        2 => Just(Step::Tick),
        2 => (0..2000_u16).prop_map(Step::RunForUs),
    ]
}

#[derive(Default)]
struct Model {
    /// Per pair: bytes delivered to callbacks, in callback order.
    got: [Vec<u8>; PAIRS],
    /// Per pair: the active receive and whether its final callback ran.
    active: [Option<OpId>; PAIRS],
    finals: Vec<Tag>,
    held: Vec<PoolBuf>,
    hold: bool,
}

/// Tags: the pair in the low bits, a serial number above, so that each receive is unique.
fn pair_of(tag: Tag) -> usize {
    (tag % PAIRS as u64) as usize
}

fn on_pooled(model: &mut Model, _: &mut Io<Model>, tag: Tag, shot: Shot<PoolBuf>) {
    let pair = pair_of(tag);
    match shot.result {
        Ok(buf) => {
            model.got[pair].extend_from_slice(&buf);
            if model.hold && !buf.is_empty() {
                model.held.push(buf);
            }
        }
        Err(error) => assert_eq!(error.raw_os_error(), Some(libc::ECANCELED), "{error}"),
    }
    if !shot.more {
        assert!(
            !model.finals.contains(&tag),
            "two final callbacks for {tag}"
        );
        model.finals.push(tag);
        model.active[pair] = None;
    }
}

fn on_plain(model: &mut Model, _: &mut Io<Model>, tag: Tag, (result, buf): BufResult) {
    let pair = pair_of(tag);
    match result {
        Ok(_) => model.got[pair].extend_from_slice(&buf),
        Err(error) => assert_eq!(error.raw_os_error(), Some(libc::ECANCELED), "{error}"),
    }
    assert!(
        !model.finals.contains(&tag),
        "two final callbacks for {tag}"
    );
    model.finals.push(tag);
    model.active[pair] = None;
}

fn on_cancel(_: &mut Model, _: &mut Io<Model>, _: Tag, result: std::io::Result<()>) {
    let errno = result.err().and_then(|error| error.raw_os_error());
    assert!(
        matches!(errno, None | Some(libc::ENOENT) | Some(libc::EALREADY)),
        "cancel: {errno:?}"
    );
}

fn check_sequence(steps: &[Step], masked: bool) -> Result<(), TestCaseError> {
    let mut options = Options::new(16);
    options.pool = PoolOptions::new(BUFFERS, BUFFER_SIZE);
    options.uring.pbuf_ring = !masked;
    options.uring.multishot = !masked;
    let Some(mut io) = check::io::<Model>(&options) else {
        return Ok(());
    };
    let pairs: Vec<(UnixStream, UnixStream)> =
        (0..PAIRS).map(|_| UnixStream::pair().unwrap()).collect();
    let mut sent: [Vec<u8>; PAIRS] = Default::default();
    let mut model = Model::default();
    let mut serial: u64 = 0;
    let mut started: Vec<Tag> = Vec::new();
    for step in steps {
        match *step {
            Step::Write { pair, len } => {
                let bytes: Vec<u8> = (0..len).map(|i| (sent[pair].len() + i) as u8).collect();
                (&pairs[pair].1).write_all(&bytes).unwrap();
                sent[pair].extend_from_slice(&bytes);
            }
            Step::Receive { pair, kind } if model.active[pair].is_none() => {
                serial += 1;
                let tag = serial * PAIRS as u64 + pair as u64;
                let fd = pairs[pair].0.as_raw_fd();
                let id = match kind {
                    0 => io.recv_multishot(tag, fd, on_pooled),
                    1 => io.recv_pooled(tag, fd, on_pooled),
                    _ => io
                        .recv(tag, fd, Vec::with_capacity(24), on_plain)
                        .map_err(|error| error.kind)
                        .map_err(|kind| dispatch_loop::ScheduleError { kind, value: () }),
                }
                .unwrap();
                model.active[pair] = Some(id);
                started.push(tag);
            }
            Step::Receive { .. } => {}
            Step::Cancel { pair } => {
                if let Some(id) = model.active[pair] {
                    io.cancel(0, id, on_cancel).unwrap();
                }
            }
            Step::Hold(hold) => model.hold = hold,
            Step::Release => model.held.clear(),
            Step::Tick => io.tick(&mut model).unwrap(),
            Step::RunForUs(us) => io.run_for_ns(&mut model, u64::from(us) * 1000).unwrap(),
        }
        for (pair, (sent, got)) in sent.iter().zip(&model.got).enumerate() {
            prop_assert!(
                sent.starts_with(got),
                "pair {}: got bytes that were not sent, or out of order",
                pair
            );
        }
    }
    drain_and_check(&mut io, &mut model, &pairs, &sent, serial, started)
}

/// Lets the pool refill, receives the rest of every stream to its end, and checks the model:
/// every byte once, one final callback per receive, every buffer back.
fn drain_and_check(
    io: &mut Io<Model>,
    model: &mut Model,
    pairs: &[(UnixStream, UnixStream)],
    sent: &[Vec<u8>; PAIRS],
    serial: u64,
    mut started: Vec<Tag>,
) -> Result<(), TestCaseError> {
    // Let the pool refill, then receive the rest of every stream and end it.
    model.hold = false;
    model.held.clear();
    for id in model.active.into_iter().flatten() {
        io.cancel(0, id, on_cancel).unwrap();
    }
    io.run_until_idle(model).unwrap();
    for (pair, (socket, peer)) in pairs.iter().enumerate() {
        peer.shutdown(std::net::Shutdown::Write).unwrap();
        let tag = (serial + 1) * PAIRS as u64 + pair as u64;
        io.recv_multishot(tag, socket.as_raw_fd(), on_pooled)
            .unwrap();
        started.push(tag);
    }
    io.run_until_idle(model).unwrap();
    for (pair, (sent, got)) in sent.iter().zip(&model.got).enumerate() {
        prop_assert_eq!(got, sent, "pair {}: every byte, once", pair);
    }
    let mut finals = model.finals.clone();
    finals.sort_unstable();
    started.sort_unstable();
    prop_assert_eq!(finals, started, "exactly one final callback per receive");
    io.tick(model).unwrap();
    prop_assert_eq!(io.pool_buffers_lent(), 0, "every buffer back");
    prop_assert_eq!(io.in_flight(), 0);
    Ok(())
}

/// The same steps, then the loop dropped with receives in flight and buffers held.
fn drop_midway(steps: &[Step]) {
    let mut options = Options::new(16);
    options.pool = PoolOptions::new(BUFFERS, BUFFER_SIZE);
    let Some(mut io) = check::io::<Model>(&options) else {
        return;
    };
    let pairs: Vec<(UnixStream, UnixStream)> =
        (0..PAIRS).map(|_| UnixStream::pair().unwrap()).collect();
    let mut model = Model {
        hold: true,
        ..Model::default()
    };
    for (pair, (socket, _)) in pairs.iter().enumerate() {
        let id = io
            .recv_multishot(pair as Tag, socket.as_raw_fd(), on_pooled)
            .unwrap();
        model.active[pair] = Some(id);
    }
    for step in steps {
        if let Step::Write { pair, len } = *step {
            (&pairs[pair].1).write_all(&vec![1; len]).unwrap();
            io.tick(&mut model).unwrap();
        }
    }
    drop(io);
    // Held handles outlive the loop.
    let total: usize = model.held.iter().map(|buf| buf.len()).sum();
    assert!(total <= model.got.iter().map(Vec::len).sum());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn pooled_and_plain_receives_keep_the_model(
        steps in proptest::collection::vec(step(), 1..60),
        masked in any::<bool>(),
    ) {
        check_sequence(&steps, masked)?;
        drop_midway(&steps);
    }
}
