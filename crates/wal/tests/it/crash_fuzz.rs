//! The log's crash fuzzer: group commit under every disk fault, crashed at random moments.
//!
//! How it works: one seed builds one simulated world (`dispatch_loop::sim`, faults on: disk
//! `EIO`, short direct writes, torn writes at a crash, latency, reordering, delays; one seed
//! in four has a small disk, so `ENOSPC` comes too) and lives several lives on it. Each life
//! starts a loop, opens the log (recovery), checks what it recovered, then appends: a timer
//! fires at random moments and each time several callers append records of random lengths
//! in the same turn (so groups hold many records and span blocks). After a random slice of
//! virtual time the world crashes (a life may also close and reopen its log, healthy or
//! failed, without a crash) (`Sim::crash`: unsynced writes kept, lost or torn, the
//! log's own directory changes undone unless fsynced) and the next life begins.
//!
//! The checks, at every recovery: every record ever acknowledged is there, at its sequence
//! number, byte for byte; and every record returned is one that was appended with that
//! sequence number (so none is torn, stale or invented). What recovery returns is then
//! durable (the log cut its tail and flushed), so it becomes the history the next life is
//! held to. A failed append (`EIO`, `ENOSPC`) is never acknowledged, and the log stays
//! failed until the next life reopens it.
//!
//! Environment (what `cargo xtask fuzz --fuzzer wal` sets): `WAL_FUZZ_SEED=N` replays one
//! seed and prints its trace hash; `WAL_FUZZ_SEEDS=N` runs N seeds from `WAL_FUZZ_START`
//! (default 0) on `WAL_FUZZ_THREADS` threads (default one per core); `WAL_FUZZ_OPS` is the
//! appends per seed (default 2,000); `WAL_FUZZ_PLANTED=1` turns on the planted bug
//! (acknowledging a group before its `fdatasync`), and with `WAL_FUZZ_EXPECT_CAUGHT=1` the
//! run passes only if some seed catches it (the fuzzer's self-test).

use std::collections::BTreeMap;
use std::io;
use std::time::Instant;

use dispatch_loop::sim::{Faults, Sim, SimOptions};
use dispatch_loop::{Io, Options, Tag};
use dispatch_wal::{AppendError, Wal, WalHost, WalOptions};

/// The harness's own generator (SplitMix64), apart from the world's.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// One seed's set-up.
#[derive(Debug, Clone, Copy)]
pub struct FuzzOptions {
    pub seed: u64,
    /// Appends before the lives stop.
    pub ops: u64,
    pub planted_bug: bool,
}

/// What a passing seed did.
#[derive(Debug, Clone, Copy, Default)]
pub struct Outcome {
    pub trace_hash: u64,
    pub lives: u32,
    pub appended: u64,
    pub acked: u64,
    pub failed: u64,
    pub reopens: u64,
    pub recovered: u64,
    pub torn_writes: u64,
    pub eio: u64,
    pub disk_full: u64,
}

/// The program under test: the log and what the harness knows of its history.
struct Harness {
    wal: Wal<Harness>,
    rng: Rng,
    /// Payloads appended in this life and not acknowledged yet, by sequence number.
    pending: BTreeMap<u64, Vec<u8>>,
    /// Every record that must survive: acknowledged, or recovered (durable since).
    durable: BTreeMap<u64, Vec<u8>>,
    /// Every payload ever appended under each sequence number since it was last settled:
    /// what recovery may return there.
    history: BTreeMap<u64, Vec<Vec<u8>>>,
    /// This life's open succeeded (and its recovery was checked).
    opened: bool,
    failure: Option<String>,
    appended: u64,
    ops: u64,
    counter: u64,
    acked: u64,
    failed: u64,
    /// Reopens without a crash (after a failure, or of a healthy idle log).
    reopens: u64,
    /// This life reopened the log already.
    reopened: bool,
}

impl WalHost for Harness {
    fn wal(&mut self) -> &mut Wal<Harness> {
        &mut self.wal
    }
}

/// Record `counter`'s payload: its length and bytes come from the counter.
fn payload(rng: &mut Rng, counter: u64) -> Vec<u8> {
    let len = 1 + rng.below(3000) as usize;
    let mut state = Rng(counter.wrapping_mul(0x2545_f491_4f6c_dd1d));
    (0..len).map(|_| state.next() as u8).collect()
}

fn on_durable(h: &mut Harness, _: &mut Io<Harness>, _: Tag, lsn: io::Result<u64>) {
    match lsn {
        Ok(lsn) => {
            h.acked += 1;
            match h.pending.remove(&lsn) {
                Some(bytes) => {
                    h.durable.insert(lsn, bytes);
                }
                None => fail(
                    h,
                    format!("record {lsn} acknowledged twice or never appended"),
                ),
            }
        }
        // Failed: it may or may not be on disk (the history allows either).
        Err(_) => h.failed += 1,
    }
}

fn fail(h: &mut Harness, failure: String) {
    h.failure.get_or_insert(failure);
}

/// A turn of callers: several appends in one turn, then the next turn at a random time.
fn on_tick(h: &mut Harness, io: &mut Io<Harness>, _: Tag, _: io::Result<()>) {
    // Now and then a healthy, idle log is closed and opened again, without a crash: what it
    // recovers must be everything acknowledged.
    if h.wal.is_ready() && h.wal.is_idle() && h.rng.below(40) == 0 {
        h.reopens += 1;
        h.wal.close(io);
        h.wal.open(io, on_open).expect("a closed log opens");
        return;
    }
    let callers = 1 + h.rng.below(6);
    for caller in 0..callers {
        if h.appended >= h.ops {
            return;
        }
        h.counter += 1;
        let bytes = payload(&mut h.rng, h.counter);
        match h.wal.append(io, caller, &bytes, on_durable) {
            Ok(lsn) => {
                h.appended += 1;
                h.history.entry(lsn).or_default().push(bytes.clone());
                h.pending.insert(lsn, bytes);
            }
            // The log failed: half the time it stays so until the next life (after the
            // crash), half the time it is reopened at once, without a crash (recovery then
            // must not trust what the failed flush left in the page cache); once a life.
            Err(AppendError::Failed(_)) => {
                if !h.reopened && h.rng.below(2) == 0 {
                    h.reopened = true;
                    h.reopens += 1;
                    h.wal.close(io);
                    h.wal.open(io, on_open).expect("a closed log opens");
                }
                return;
            }
            Err(AppendError::Full | AppendError::NoSlot) => {}
            Err(other) => return fail(h, format!("append refused: {other:?}")),
        }
    }
    let next_ns = 1_000 + h.rng.below(2_000_000);
    io.timeout(0, next_ns, on_tick)
        .expect("a slot for the timer");
}

/// Opened: recovery is checked against the history at once (before this life appends),
/// then the callers start.
fn on_open(h: &mut Harness, io: &mut Io<Harness>, recovered: io::Result<Vec<Vec<u8>>>) {
    match recovered {
        Ok(records) => {
            if let Err(failure) = check_recovered(h, records) {
                return fail(h, failure);
            }
            h.opened = true;
            on_tick(h, io, 0, Ok(()));
        }
        Err(_) => h.opened = false,
    }
}

/// The last open: recovery checked, no appends.
fn on_open_last(h: &mut Harness, _: &mut Io<Harness>, recovered: io::Result<Vec<Vec<u8>>>) {
    if let Ok(records) = recovered {
        match check_recovered(h, records) {
            Ok(()) => h.opened = true,
            Err(failure) => fail(h, failure),
        }
    }
}

/// Recovery's answer against the history; what was recovered becomes the history.
fn check_recovered(h: &mut Harness, records: Vec<Vec<u8>>) -> Result<(), String> {
    for (&lsn, bytes) in &h.durable {
        match records.get(lsn as usize - 1) {
            Some(found) if found == bytes => {}
            Some(_) => return Err(format!("durable record {lsn} came back changed")),
            None => {
                let n = records.len();
                return Err(format!("durable record {lsn} lost ({n} recovered)"));
            }
        }
    }
    for (index, record) in records.iter().enumerate() {
        let lsn = index as u64 + 1;
        let appended = h.history.get(&lsn).is_some_and(|all| all.contains(record));
        if !appended && !h.durable.contains_key(&lsn) {
            return Err(format!("record {lsn} recovered but never appended (torn?)"));
        }
    }
    h.durable = (1..).zip(records).collect();
    h.history.clear();
    for (&lsn, bytes) in &h.durable {
        h.history.insert(lsn, vec![bytes.clone()]);
    }
    Ok(())
}

const LIVES: u32 = 6;

fn wal_options(planted_bug: bool) -> WalOptions {
    // The temporary directory: a simulated disk starts with it, durably.
    let dir = std::env::temp_dir();
    let mut options = WalOptions::new(dir.to_str().expect("a UTF-8 path"), "wal");
    options.group_bytes_max = 64 * 1024;
    options.ack_before_sync_for_testing = planted_bug;
    options
}

fn world(options: &FuzzOptions) -> Sim {
    let mut rng = Rng(options.seed ^ 0xd1b5_4a32_d192_ed03);
    let mut sim_options = SimOptions::new(options.seed);
    let mut faults = Faults::standard();
    faults.disk_eio = 2_000;
    faults.torn_write = 400_000;
    sim_options.faults = faults;
    if rng.below(4) == 0 {
        sim_options.disk_capacity_bytes = 256 * 1024 + rng.below(4) * 64 * 1024;
    }
    Sim::new(&sim_options).expect("a world")
}

/// One life: open (checking the recovery), append for a random slice of virtual time,
/// crash. Whether the log opened.
fn live(sim: &Sim, h: &mut Harness, planted_bug: bool) -> Result<bool, String> {
    let mut io: Io<Harness> = Io::new_sim(&Options::new(16), sim).expect("a loop");
    let mut old = std::mem::replace(&mut h.wal, Wal::new(&wal_options(planted_bug)).unwrap());
    old.close(&mut io);
    h.pending.clear();
    h.opened = false;
    h.reopened = false;
    h.wal.open(&mut io, on_open).expect("a closed log opens");
    let slice_ns = 1 + h.rng.below(60_000_000);
    io.run_for_ns(h, slice_ns).map_err(|e| e.to_string())?;
    let opened = h.opened;
    if let Some(failure) = h.failure.take() {
        return Err(failure);
    }
    sim.crash();
    drop(io);
    Ok(opened)
}

/// Runs one seed: several lives, then a last recovery that must open.
pub fn run(options: FuzzOptions) -> Result<Outcome, String> {
    let sim = world(&options);
    let mut h = Harness {
        wal: Wal::new(&wal_options(options.planted_bug)).unwrap(),
        rng: Rng(options.seed),
        pending: BTreeMap::new(),
        durable: BTreeMap::new(),
        history: BTreeMap::new(),
        opened: false,
        failure: None,
        appended: 0,
        ops: 0,
        counter: 0,
        acked: 0,
        failed: 0,
        reopens: 0,
        reopened: false,
    };
    let mut lives = 0;
    while lives < LIVES || h.appended < options.ops {
        h.ops = (options.ops * u64::from(lives + 1) / u64::from(LIVES)).max(h.appended);
        live(&sim, &mut h, options.planted_bug)?;
        lives += 1;
        if lives > LIVES * 8 {
            break;
        }
    }
    final_recovery(&sim, &mut h, options.planted_bug)?;
    let stats = sim.stats();
    Ok(Outcome {
        trace_hash: sim.trace_hash(),
        lives,
        appended: h.appended,
        acked: h.acked,
        failed: h.failed,
        reopens: h.reopens,
        recovered: h.durable.len() as u64,
        torn_writes: stats.faults.torn_write,
        eio: stats.faults.disk_eio,
        disk_full: stats.disk_full,
    })
}

/// After the last crash: recover (retrying past `EIO`s) and check, then close everything.
fn final_recovery(sim: &Sim, h: &mut Harness, planted_bug: bool) -> Result<(), String> {
    h.ops = h.appended;
    for _ in 0..50 {
        let mut io: Io<Harness> = Io::new_sim(&Options::new(16), sim).expect("a loop");
        let mut old = std::mem::replace(&mut h.wal, Wal::new(&wal_options(planted_bug)).unwrap());
        old.close(&mut io);
        h.opened = false;
        h.wal
            .open(&mut io, on_open_last)
            .expect("a closed log opens");
        io.run_until_idle(h).map_err(|e| e.to_string())?;
        if let Some(failure) = h.failure.take() {
            return Err(failure);
        }
        if h.opened {
            h.wal.close(&mut io);
            io.run_until_idle(h).map_err(|e| e.to_string())?;
            if sim.open_descriptors() != 0 {
                return Err(format!("{} descriptors left open", sim.open_descriptors()));
            }
            return Ok(());
        }
    }
    Err(format!("the log never opened again: {:?}", h.wal.failed()))
}

/// `run`, with a failure reported with its replay command.
fn run_reported(options: FuzzOptions) -> Result<Outcome, String> {
    run(options).map_err(|failure| {
        let planted = if options.planted_bug {
            " --planted-bug"
        } else {
            ""
        };
        let message = format!(
            "seed {} failed: {failure}\n  replay: cargo xtask fuzz --fuzzer wal --seed {} \
             --ops {}{planted}",
            options.seed, options.seed, options.ops
        );
        eprintln!("{message}");
        message
    })
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
}

/// Seeds `start..start + count` on `threads` threads: the failures and the outcomes.
fn run_many(
    start: u64,
    count: u64,
    ops: u64,
    planted_bug: bool,
    threads: u64,
) -> Vec<(u64, Result<Outcome, String>)> {
    let threads = threads.clamp(1, count.max(1));
    let mut results: Vec<(u64, Result<Outcome, String>)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|worker| {
                scope.spawn(move || {
                    let seeds = (start + worker..start + count).step_by(threads as usize);
                    seeds
                        .map(|seed| {
                            let options = FuzzOptions {
                                seed,
                                ops,
                                planted_bug,
                            };
                            let quiet = planted_bug;
                            let result = if quiet {
                                run(options)
                            } else {
                                run_reported(options)
                            };
                            (seed, result)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|worker| worker.join().expect("a fuzzing thread"))
            .collect()
    });
    results.sort_by_key(|(seed, _)| *seed);
    results
}

fn cores() -> u64 {
    std::thread::available_parallelism().map_or(1, |n| n.get() as u64)
}

/// The sums of the passing seeds.
fn summary(results: &[(u64, Result<Outcome, String>)]) -> Outcome {
    let mut total = Outcome::default();
    for (_, outcome) in results {
        if let Ok(o) = outcome {
            total.lives += o.lives;
            total.appended += o.appended;
            total.acked += o.acked;
            total.failed += o.failed;
            total.reopens += o.reopens;
            total.recovered += o.recovered;
            total.torn_writes += o.torn_writes;
            total.eio += o.eio;
            total.disk_full += o.disk_full;
            total.trace_hash = total.trace_hash.rotate_left(5) ^ o.trace_hash;
        }
    }
    total
}

#[test]
fn fuzz_from_env() {
    let ops = env_u64("WAL_FUZZ_OPS").unwrap_or(2_000);
    let planted_bug = env_u64("WAL_FUZZ_PLANTED") == Some(1);
    if let Some(seed) = env_u64("WAL_FUZZ_SEED") {
        let options = FuzzOptions {
            seed,
            ops,
            planted_bug,
        };
        let outcome = run_reported(options).unwrap_or_else(|_| panic!("seed {seed} failed"));
        eprintln!(
            "seed {seed}: passed, trace hash {:#018x}: {outcome:?}",
            outcome.trace_hash
        );
        return;
    }
    let Some(count) = env_u64("WAL_FUZZ_SEEDS") else {
        eprintln!("set WAL_FUZZ_SEED or WAL_FUZZ_SEEDS (cargo xtask fuzz --fuzzer wal does)");
        return;
    };
    let start = env_u64("WAL_FUZZ_START").unwrap_or(0);
    let threads = env_u64("WAL_FUZZ_THREADS").unwrap_or_else(cores);
    let started = Instant::now();
    let results = run_many(start, count, ops, planted_bug, threads);
    let wall = started.elapsed().as_secs_f64();
    let failures: Vec<u64> = results
        .iter()
        .filter(|(_, r)| r.is_err())
        .map(|(s, _)| *s)
        .collect();
    let total = summary(&results);
    eprintln!(
        "{count} seeds from {start} ({ops} appends each, {threads} threads) in {wall:.1} s: \
         {:.0} seeds per minute; {total:?}",
        count as f64 / wall * 60.0
    );
    if env_u64("WAL_FUZZ_EXPECT_CAUGHT") == Some(1) {
        assert!(
            planted_bug,
            "WAL_FUZZ_EXPECT_CAUGHT needs WAL_FUZZ_PLANTED=1"
        );
        let caught = failures
            .first()
            .expect("the planted bug was not caught by any seed");
        let why = results[(caught - start) as usize].1.as_ref().unwrap_err();
        eprintln!(
            "planted bug (acknowledging before the fdatasync) caught by {} of {count} seeds, \
             first by seed {caught}: {why}",
            failures.len()
        );
        return;
    }
    assert!(
        failures.is_empty(),
        "{} seeds failed: {failures:?}",
        failures.len()
    );
}

/// The suite's share: a few dozen seeds pass, and the planted bug is caught by them.
#[test]
fn seeds_pass_and_the_planted_bug_is_caught() {
    let results = run_many(0, 24, 300, false, cores());
    let failures: Vec<&String> = results
        .iter()
        .filter_map(|(_, r)| r.as_ref().err())
        .collect();
    assert!(failures.is_empty(), "{failures:?}");
    let total = summary(&results);
    assert!(
        total.acked > 1000 && total.torn_writes > 0 && total.eio > 0,
        "{total:?}"
    );
    let planted = run_many(0, 24, 300, true, cores());
    let caught = planted.iter().find(|(_, r)| r.is_err());
    let (seed, why) = caught.expect("the planted bug is caught within 24 seeds");
    eprintln!(
        "planted bug caught by seed {seed}: {:?}",
        why.as_ref().unwrap_err()
    );
    // Its seed replays it.
    let replay = FuzzOptions {
        seed: *seed,
        ops: 300,
        planted_bug: true,
    };
    assert_eq!(run(replay).unwrap_err(), *why.as_ref().unwrap_err());
}

#[test]
fn one_seed_gives_one_trace() {
    let options = FuzzOptions {
        seed: 42,
        ops: 200,
        planted_bug: false,
    };
    assert_eq!(
        run(options).unwrap().trace_hash,
        run(options).unwrap().trace_hash
    );
}
