//! The log on the simulator (group commit counted, acknowledgements only after the flush,
//! errors that fail records and never acknowledge them) and on a real disk with direct I/O.

use std::io;

use dispatch_loop::sim::{Faults, Sim, SimOptions};
use dispatch_loop::{Io, Options, Tag};
use dispatch_wal::{AppendError, Wal, WalHost, WalOptions};

struct App {
    wal: Wal<App>,
    recovered: Option<io::Result<Vec<Vec<u8>>>>,
    acked: Vec<(Tag, u64)>,
    failed: Vec<(Tag, i32)>,
    /// Appends made by `on_open_append`, by tag.
    appends: u64,
}

impl WalHost for App {
    fn wal(&mut self) -> &mut Wal<App> {
        &mut self.wal
    }
}

fn app(options: &WalOptions) -> App {
    App {
        wal: Wal::new(options).unwrap(),
        recovered: None,
        acked: Vec::new(),
        failed: Vec::new(),
        appends: 0,
    }
}

fn on_durable(app: &mut App, _: &mut Io<App>, tag: Tag, lsn: io::Result<u64>) {
    match lsn {
        Ok(lsn) => app.acked.push((tag, lsn)),
        Err(error) => app.failed.push((tag, error.raw_os_error().unwrap())),
    }
}

/// Opened: `app.appends` callers append one record each, in this one turn.
fn on_open_append(app: &mut App, io: &mut Io<App>, recovered: io::Result<Vec<Vec<u8>>>) {
    let ok = recovered.is_ok();
    app.recovered = Some(recovered);
    if ok {
        for caller in 0..app.appends {
            let record = format!("record of caller {caller}").into_bytes();
            app.wal.append(io, caller, &record, on_durable).unwrap();
        }
    }
}

fn sim_options() -> WalOptions {
    let dir = std::env::temp_dir();
    let mut options = WalOptions::new(dir.to_str().unwrap(), "wal-test");
    options.group_bytes_max = 64 * 1024;
    options
}

/// A world with `faults`, and a loop on it.
fn check(seed: u64, faults: Faults) -> (Sim, Io<App>) {
    let mut options = SimOptions::new(seed);
    options.faults = faults;
    let sim = Sim::new(&options).unwrap();
    let io = Io::new_sim(&Options::new(16), &sim).unwrap();
    (sim, io)
}

#[test]
fn appends_of_one_turn_go_out_as_one_write_and_one_fdatasync() {
    let (sim, mut io) = check(1, Faults::NONE);
    let mut app = app(&sim_options());
    app.appends = 10;
    app.wal.open(&mut io, on_open_append).unwrap();
    io.run_until_idle(&mut app).unwrap();
    assert_eq!(
        app.recovered.take().unwrap().unwrap(),
        Vec::<Vec<u8>>::new()
    );
    let lsns: Vec<u64> = app.acked.iter().map(|&(_, lsn)| lsn).collect();
    assert_eq!(
        lsns,
        (1..=10).collect::<Vec<u64>>(),
        "acknowledged in order"
    );
    let stats = app.wal.stats();
    assert_eq!(
        (stats.groups, stats.acked, stats.bytes_written),
        (1, 10, 4096)
    );
    // A second turn's appends are the second group; reopened, the log has all 15.
    for caller in 10..15 {
        app.wal
            .append(&mut io, caller, b"more", on_durable)
            .unwrap();
    }
    assert_eq!(
        app.acked.len(),
        10,
        "nothing acknowledged before its fdatasync"
    );
    io.run_until_idle(&mut app).unwrap();
    assert_eq!((app.wal.stats().groups, app.acked.len()), (2, 15));
    sim.crash();
    drop(io);
    let mut io = Io::new_sim(&Options::new(16), &sim).unwrap();
    app.wal.close(&mut io);
    app.wal = Wal::new(&sim_options()).unwrap();
    app.appends = 0;
    app.wal.open(&mut io, on_open_append).unwrap();
    io.run_until_idle(&mut app).unwrap();
    let records = app.recovered.take().unwrap().unwrap();
    assert_eq!(records.len(), 15);
    assert_eq!(records[3], b"record of caller 3");
    app.wal.close(&mut io);
    io.run_until_idle(&mut app).unwrap();
    assert_eq!(sim.open_descriptors(), 0);
}

#[test]
fn appends_are_refused_when_not_open_empty_or_too_large() {
    let (_sim, mut io) = check(2, Faults::NONE);
    let mut app = app(&sim_options());
    assert_eq!(
        app.wal.append(&mut io, 0, b"x", on_durable),
        Err(AppendError::NotOpen)
    );
    app.wal.open(&mut io, on_open_append).unwrap();
    io.run_until_idle(&mut app).unwrap();
    assert_eq!(
        app.wal.append(&mut io, 0, b"", on_durable),
        Err(AppendError::Empty)
    );
    let huge = vec![1; 64 * 1024];
    assert_eq!(
        app.wal.append(&mut io, 0, &huge, on_durable),
        Err(AppendError::TooLarge)
    );
    let big = vec![1; 40 * 1024];
    assert!(app.wal.append(&mut io, 0, &big, on_durable).is_ok());
    assert_eq!(
        app.wal.append(&mut io, 1, &big, on_durable),
        Err(AppendError::Full)
    );
    io.run_until_idle(&mut app).unwrap();
    assert_eq!(app.acked, [(0, 1)]);
}

/// One seed with disk `EIO` often: whether a group failed, and what the callbacks saw.
fn eio_seed(seed: u64) -> Option<App> {
    let mut faults = Faults::NONE;
    faults.disk_eio = 200_000;
    let (_sim, mut io) = check(seed, faults);
    let mut app = app(&sim_options());
    app.appends = 8;
    app.wal.open(&mut io, on_open_append).unwrap();
    io.run_until_idle(&mut app).unwrap();
    if !app.recovered.as_ref().unwrap().is_ok() || app.failed.is_empty() {
        return None;
    }
    Some(app)
}

#[test]
fn an_eio_fails_the_group_never_acknowledges_it_and_the_log_stays_failed() {
    let mut app = (0..200)
        .find_map(eio_seed)
        .expect("a seed where a group fails");
    let failed: Vec<Tag> = app.failed.iter().map(|&(tag, _)| tag).collect();
    assert!(app.failed.iter().all(|&(_, errno)| errno == libc::EIO));
    assert!(app.acked.iter().all(|(tag, _)| !failed.contains(tag)));
    assert_eq!(app.acked.len() + app.failed.len(), 8);
    assert_eq!(app.wal.failed(), Some(libc::EIO));
    let (_sim, mut io) = check(0, Faults::NONE);
    let refused = app.wal.append(&mut io, 0, b"x", on_durable);
    assert_eq!(refused, Err(AppendError::Failed(libc::EIO)));
}

#[test]
fn direct_io_on_a_real_disk_round_trips() {
    // Cargo's temporary directory for this package lives in the target directory, on disk
    // (the system's temporary directory may be tmpfs, which refuses O_DIRECT).
    let dir = env!("CARGO_TARGET_TMPDIR");
    let _ = std::fs::remove_file(format!("{dir}/wal-direct"));
    let options = WalOptions::new(dir, "wal-direct");
    let run = |appends: u64| {
        let mut io: Io<App> = Io::new(&Options::new(16)).unwrap();
        let mut app = app(&options);
        app.appends = appends;
        app.wal.open(&mut io, on_open_append).unwrap();
        io.run_until_idle(&mut app).unwrap();
        app.wal.close(&mut io);
        io.run_until_idle(&mut app).unwrap();
        app
    };
    let mut first = run(20);
    match first.recovered.take().unwrap() {
        Err(error) if error.raw_os_error() == Some(libc::EINVAL) => {
            eprintln!("skipped: {dir} refuses O_DIRECT (EINVAL): not a disk-backed file system");
            return;
        }
        recovered => assert_eq!(recovered.unwrap().len(), 0),
    }
    assert_eq!((first.acked.len(), first.wal.stats().groups), (20, 1));
    let records = run(0).recovered.unwrap().unwrap();
    assert_eq!(records.len(), 20);
    assert_eq!(records[19], b"record of caller 19");
    std::fs::remove_file(format!("{dir}/wal-direct")).unwrap();
}
