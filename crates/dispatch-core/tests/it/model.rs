//! Random operation sequences against a simple model of what the loop promises: every
//! scheduled operation's callback runs exactly once; a timeout never fires early; a target
//! ended with ECANCELED exactly when one of its cancels succeeded; scheduling fails exactly
//! when `ops_max` operations are in flight; nothing is left in flight at the end.

use std::collections::BTreeMap;
use std::io;
use std::time::{Duration, Instant};

use dispatch_core::{Io, OpId, Options, ScheduleErrorKind, Tag};
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
    },
}

fn check_sequence(steps: &[Step], sq_entries: u32) -> Result<(), TestCaseError> {
    let mut options = Options::new(OPS_MAX);
    options.uring.sq_entries = sq_entries;
    let Some(mut io) = check::io::<Model>(&options) else {
        return Ok(());
    };
    let mut model = Model::default();
    let mut scheduled: Vec<Scheduled> = Vec::new();
    let mut timeouts: Vec<Tag> = Vec::new();
    for step in steps {
        let tag = scheduled.len() as Tag;
        let in_flight = io.in_flight();
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
                io.cancel(tag, id, on_result)
                    .map(|_| Scheduled::Cancel { target_tag })
            }
            Step::Cancel(_) => continue,
            Step::Tick => {
                io.tick(&mut model).unwrap();
                continue;
            }
            Step::RunForUs(us) => {
                io.run_for_ns(&mut model, u64::from(us) * 1000).unwrap();
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
    io.run_until_idle(&mut model).unwrap();
    prop_assert_eq!(io.in_flight(), 0);
    prop_assert_eq!(
        model.results.len(),
        scheduled.len(),
        "every callback ran once"
    );
    prop_assert_eq!(io.stats().ops_completed, scheduled.len() as u64);
    // A target that ended cancelled was cancelled by one of its cancels (several may race).
    for &target_tag in &timeouts {
        if model.results[&target_tag].0 == libc::ECANCELED {
            let cancelled_by = scheduled.iter().enumerate().filter(|(tag, entry)| {
                matches!(entry, Scheduled::Cancel { target_tag: t } if *t == target_tag)
                    && model.results[&(*tag as Tag)].0 == 0
            });
            prop_assert_eq!(
                cancelled_by.count(),
                1,
                "timeout {} cancelled once",
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
            Scheduled::Cancel { target_tag } => {
                let (target_errno, _) = model.results[&target_tag];
                prop_assert!(
                    matches!(errno, 0 | libc::ENOENT | libc::EALREADY),
                    "{}",
                    errno
                );
                if errno == 0 {
                    prop_assert_eq!(target_errno, libc::ECANCELED);
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
