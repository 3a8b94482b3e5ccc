//! Random operation sequences against a simple model of what the loop promises: every
//! scheduled operation's callback runs exactly once; a timeout never fires early; a cancel
//! answers `ENOENT` exactly when its target's callback had run before it was scheduled, and
//! a target ended with ECANCELED only when one of its cancels answered `Ok`; scheduling
//! fails exactly when `ops_max` operations are in flight; nothing is left in flight at the
//! end.

use std::collections::BTreeMap;
use std::io;
use std::time::{Duration, Instant};

use dispatch_loop::{Io, OpId, Options, ScheduleErrorKind, Tag};
use proptest::prelude::*;

use crate::check;

const OPS_MAX: u32 = 6;

#[derive(Debug, Clone)]
enum Step {
    /// A timeout of this many microseconds.
    Timeout(u16),
    /// Cancel the n-th operation scheduled so far (modulo their number).
    Cancel(usize),
    Tick,
    RunForUs(u16),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0_u16..3000).prop_map(Step::Timeout),
        2 => any::<usize>().prop_map(Step::Cancel),
        2 => Just(Step::Tick),
        1 => (0_u16..2000).prop_map(Step::RunForUs),
    ]
}

#[derive(Default)]
struct Model {
    /// Every callback's result by tag (0 or errno), with the time it ran.
    results: BTreeMap<Tag, (i32, Instant)>,
}

fn on_result(model: &mut Model, _: &mut Io<Model>, tag: Tag, result: io::Result<()>) {
    let errno = result
        .err()
        .map_or(0, |error| error.raw_os_error().unwrap());
    let previous = model.results.insert(tag, (errno, Instant::now()));
    assert!(previous.is_none(), "callback {tag} ran twice");
}

enum Scheduled {
    Timeout {
        id: OpId,
        at: Instant,
        timeout_us: u16,
    },
    Cancel {
        target_tag: Tag,
        /// The target's callback had run when the cancel was scheduled.
        stale: bool,
    },
}

fn check_sequence(steps: &[Step], sq_entries: u32) -> Result<(), TestCaseError> {
    let mut options = Options::new(OPS_MAX);
    options.uring.sq_entries = sq_entries;
    let Some(mut io) = check::io::<Model>(&options) else {
        return Ok(());
    };
    let mut model = Model::default();
    let (scheduled, timeouts) = run_steps(&mut io, &mut model, steps)?;
    io.run_until_idle(&mut model).unwrap();
    prop_assert_eq!(io.in_flight(), 0);
    prop_assert_eq!(io.stats().ops_completed, scheduled.len() as u64);
    check_results(&model, &scheduled, &timeouts)
}

/// Runs `steps`, checking each scheduling result; returns what was scheduled (indexed by
/// tag) and the tags of the timeouts.
fn run_steps(
    io: &mut Io<Model>,
    model: &mut Model,
    steps: &[Step],
) -> Result<(Vec<Scheduled>, Vec<Tag>), TestCaseError> {
    let mut scheduled: Vec<Scheduled> = Vec::new();
    let mut timeouts: Vec<Tag> = Vec::new();
    for step in steps {
        let tag = scheduled.len() as Tag;
        // Operations and cancels have a budget of `OPS_MAX` each: count this step's.
        let is_cancel = matches!(step, Step::Cancel(_));
        let in_flight = scheduled
            .iter()
            .enumerate()
            .filter(|(tag, entry)| {
                matches!(entry, Scheduled::Cancel { .. }) == is_cancel
                    && !model.results.contains_key(&(*tag as Tag))
            })
            .count() as u32;
        let outcome = match *step {
            Step::Timeout(timeout_us) => {
                let at = Instant::now();
                io.timeout(tag, u64::from(timeout_us) * 1000, on_result)
                    .map(|id| {
                        timeouts.push(tag);
                        Scheduled::Timeout { id, at, timeout_us }
                    })
            }
            Step::Cancel(n) if !timeouts.is_empty() => {
                let target_tag = timeouts[n % timeouts.len()];
                let Scheduled::Timeout { id, .. } = scheduled[target_tag as usize] else {
                    unreachable!()
                };
                let stale = model.results.contains_key(&target_tag);
                io.cancel(tag, id, on_result)
                    .map(|_| Scheduled::Cancel { target_tag, stale })
            }
            Step::Cancel(_) => continue,
            Step::Tick => {
                io.tick(model).unwrap();
                continue;
            }
            Step::RunForUs(us) => {
                io.run_for_ns(model, u64::from(us) * 1000).unwrap();
                continue;
            }
        };
        match outcome {
            Ok(entry) => {
                prop_assert!(in_flight < OPS_MAX);
                scheduled.push(entry);
            }
            Err(error) => {
                prop_assert_eq!(
                    error.kind,
                    ScheduleErrorKind::SlotsExhausted { ops_max: OPS_MAX }
                );
                prop_assert_eq!(in_flight, OPS_MAX);
            }
        }
    }
    Ok((scheduled, timeouts))
}

/// Checks every callback's result against the model.
fn check_results(
    model: &Model,
    scheduled: &[Scheduled],
    timeouts: &[Tag],
) -> Result<(), TestCaseError> {
    prop_assert_eq!(
        model.results.len(),
        scheduled.len(),
        "every callback ran once"
    );
    // A target that ended cancelled was cancelled by one of its cancels (several may race,
    // and a cancel of a target that completes first answers `Ok` too).
    for &target_tag in timeouts {
        if model.results[&target_tag].0 == libc::ECANCELED {
            let cancelled_by = scheduled.iter().enumerate().filter(|(tag, entry)| {
                matches!(entry, Scheduled::Cancel { target_tag: t, .. } if *t == target_tag)
                    && model.results[&(*tag as Tag)].0 == 0
            });
            prop_assert!(
                cancelled_by.count() >= 1,
                "timeout {} cancelled by a cancel",
                target_tag
            );
        }
    }
    for (tag, entry) in scheduled.iter().enumerate() {
        let (errno, ran_at) = model.results[&(tag as Tag)];
        match *entry {
            Scheduled::Timeout { at, timeout_us, .. } => {
                prop_assert!(
                    errno == 0 || errno == libc::ECANCELED,
                    "timeout errno {}",
                    errno
                );
                if errno == 0 {
                    let waited = ran_at - at;
                    prop_assert!(waited >= Duration::from_micros(u64::from(timeout_us)));
                }
            }
            Scheduled::Cancel { stale, .. } => {
                // `ENOENT` for a stale id, and only then; `EALREADY` while another cancel
                // of the target is in flight.
                if stale {
                    prop_assert_eq!(errno, libc::ENOENT);
                } else {
                    prop_assert!(matches!(errno, 0 | libc::EALREADY), "{}", errno);
                }
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn random_sequences_keep_the_model(
        steps in proptest::collection::vec(step(), 1..40),
        sq_entries in 1_u32..8,
    ) {
        check_sequence(&steps, sq_entries)?;
    }
}

/// Socket operations in random order on two connected pairs, with cancels: every callback
/// runs once; a cancel answers `ENOENT` exactly when its target's callback had run before
/// it was scheduled, and a target that got ECANCELED had a cancel that answered `Ok`; each
/// pair's bytes arrive
/// whole and on their own connection (what the loop received plus what was left in the
/// socket is exactly what was sent); nothing is left in flight.
mod sockets {
    use std::collections::BTreeMap;
    use std::io::Read;
    use std::net::{Shutdown, TcpStream};
    use std::os::fd::AsRawFd;

    use dispatch_loop::{BufResult, Io, OpId, Options, Tag};
    use proptest::prelude::*;

    use crate::check;

    const PAIRS: usize = 2;

    #[derive(Debug, Clone)]
    enum Step {
        /// Send this many bytes on a pair (its index's byte value) from the client side.
        Send(usize, u8),
        /// Receive up to this many bytes on a pair's server side.
        Recv(usize, u8),
        /// Cancel the n-th socket operation scheduled so far.
        Cancel(usize),
        Tick,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            3 => (0..PAIRS, 1_u8..64).prop_map(|(pair, len)| Step::Send(pair, len)),
            3 => (0..PAIRS, 1_u8..64).prop_map(|(pair, len)| Step::Recv(pair, len)),
            2 => any::<usize>().prop_map(Step::Cancel),
            2 => Just(Step::Tick),
        ]
    }

    #[derive(Default)]
    struct Seen {
        /// errno (0 for success) and byte count, by tag.
        results: BTreeMap<Tag, (i32, usize)>,
        /// Bytes the loop received, per pair.
        received: [Vec<u8>; PAIRS],
    }

    /// Tags encode the pair (low bits) and the operation kind.
    const RECV_BIT: Tag = 1 << 40;
    const CANCEL_BIT: Tag = 1 << 41;

    fn on_buf(seen: &mut Seen, _: &mut Io<Seen>, tag: Tag, (result, buf): BufResult) {
        let errno = result
            .as_ref()
            .err()
            .map_or(0, |e| e.raw_os_error().unwrap());
        let n = *result.as_ref().unwrap_or(&0);
        if tag & RECV_BIT != 0 {
            let pair = (tag & 0xff) as usize;
            seen.received[pair].extend_from_slice(&buf);
        }
        assert!(
            seen.results.insert(tag, (errno, n)).is_none(),
            "callback {tag} ran twice"
        );
    }

    fn on_cancel(seen: &mut Seen, _: &mut Io<Seen>, tag: Tag, result: std::io::Result<()>) {
        let errno = result.err().map_or(0, |e| e.raw_os_error().unwrap());
        assert!(
            seen.results.insert(tag, (errno, 0)).is_none(),
            "callback {tag} ran twice"
        );
    }

    fn check_sequence(steps: &[Step]) -> Result<(), TestCaseError> {
        let Some(mut io) = check::io::<Seen>(&Options::new(64)) else {
            return Ok(());
        };
        let pairs: Vec<(TcpStream, TcpStream)> = (0..PAIRS).map(|_| check::tcp_pair()).collect();
        let mut seen = Seen::default();
        let mut sent = [0_usize; PAIRS];
        let mut ops: Vec<(Tag, OpId)> = Vec::new();
        // (tag, target's tag, the target's callback had run when it was scheduled)
        let mut cancels: Vec<(Tag, Tag, bool)> = Vec::new();
        for (n, step) in steps.iter().enumerate() {
            let n = n as Tag;
            match *step {
                Step::Send(pair, len) => {
                    let tag = (n << 8) | pair as Tag;
                    let fd = pairs[pair].0.as_raw_fd();
                    let id = io
                        .send(tag, fd, vec![pair as u8; usize::from(len)], on_buf)
                        .unwrap();
                    sent[pair] += usize::from(len);
                    ops.push((tag, id));
                }
                Step::Recv(pair, len) => {
                    let tag = RECV_BIT | (n << 8) | pair as Tag;
                    let fd = pairs[pair].1.as_raw_fd();
                    let buf = Vec::with_capacity(usize::from(len));
                    ops.push((tag, io.recv(tag, fd, buf, on_buf).unwrap()));
                }
                Step::Cancel(k) if !ops.is_empty() => {
                    let (target_tag, id) = ops[k % ops.len()];
                    let tag = CANCEL_BIT | (n << 8);
                    let stale = seen.results.contains_key(&target_tag);
                    io.cancel(tag, id, on_cancel).unwrap();
                    cancels.push((tag, target_tag, stale));
                }
                Step::Cancel(_) => {}
                Step::Tick => io.tick(&mut seen).unwrap(),
            }
        }
        // End of stream on every pair: pending receives complete with 0.
        for (client, _) in &pairs {
            client.shutdown(Shutdown::Write).unwrap();
        }
        io.run_until_idle(&mut seen).unwrap();
        prop_assert_eq!(io.in_flight(), 0);
        prop_assert_eq!(
            seen.results.len(),
            ops.len() + cancels.len(),
            "every callback ran once"
        );
        check_cancels(&seen, &cancels)?;
        for (pair, (_, server)) in pairs.into_iter().enumerate() {
            check_bytes(&seen, pair, server, sent[pair])?;
        }
        Ok(())
    }

    /// A cancel answers `ENOENT` for a stale id, and only then (`EALREADY` while another
    /// cancel of its target is in flight); a target that ended cancelled had a cancel that
    /// answered `Ok`.
    fn check_cancels(seen: &Seen, cancels: &[(Tag, Tag, bool)]) -> Result<(), TestCaseError> {
        for &(tag, target, stale) in cancels {
            let (errno, _) = seen.results[&tag];
            if stale {
                prop_assert_eq!(errno, libc::ENOENT);
            } else {
                prop_assert!(matches!(errno, 0 | libc::EALREADY), "cancel {}", errno);
            }
            if seen.results[&target].0 == libc::ECANCELED {
                let answered_ok = cancels
                    .iter()
                    .any(|&(tag, t, _)| t == target && seen.results[&tag].0 == 0);
                prop_assert!(answered_ok, "target {} cancelled by a cancel", target);
            }
        }
        Ok(())
    }

    /// What the loop received on `pair` plus what is left in `server` is exactly what its
    /// sends reported, and all of it is `pair`'s own.
    fn check_bytes(
        seen: &Seen,
        pair: usize,
        mut server: TcpStream,
        sent: usize,
    ) -> Result<(), TestCaseError> {
        let mut rest = Vec::new();
        server.read_to_end(&mut rest).unwrap();
        let sent_whole: usize = seen
            .results
            .iter()
            .filter(|(&tag, _)| tag & (RECV_BIT | CANCEL_BIT) == 0 && (tag & 0xff) as usize == pair)
            .map(|(_, &(_, n))| n)
            .sum();
        prop_assert!(sent_whole <= sent);
        let arrived = seen.received[pair].len() + rest.len();
        prop_assert_eq!(arrived, sent_whole, "pair {}: bytes lost or invented", pair);
        let all_own = seen.received[pair]
            .iter()
            .chain(&rest)
            .all(|&b| usize::from(b) == pair);
        prop_assert!(all_own, "pair {} received another pair's bytes", pair);
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

        #[test]
        fn random_socket_operations_keep_the_model(
            steps in proptest::collection::vec(step(), 1..30),
        ) {
            check_sequence(&steps)?;
        }
    }
}
