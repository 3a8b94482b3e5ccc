//! sys-kqueue's contract, checked against the kevent double everywhere and against the real
//! kqueue where the target has one: one body, generic over `Kevent`.

use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use sys_kqueue::{Change, Changelist, ChangelistFull, Event, Fake, Filter, Flags, Kevent};

const USER: usize = 1;

fn wait<K: Kevent>(kq: &mut K, changes: &[Change], timeout_ms: u64) -> Vec<Event> {
    let mut events = [Event::EMPTY; 8];
    let n = kq
        .kevent(
            changes,
            &mut events,
            Some(Duration::from_millis(timeout_ms)),
        )
        .unwrap();
    events[..n].to_vec()
}

fn one_shot_read_fires_once_with_its_udata<K: Kevent>(kq: &mut K) {
    let (a, mut b) = UnixStream::pair().unwrap();
    let fd = a.as_raw_fd() as usize;
    let add = Change::new(fd, Filter::Read, Flags::ADD | Flags::ONESHOT, 42);
    assert!(wait(kq, &[add], 0).is_empty(), "nothing to read yet");
    b.write_all(b"x").unwrap();
    let events = wait(kq, &[], 1000);
    assert_eq!(events.len(), 1);
    assert_eq!(
        (events[0].ident, events[0].filter, events[0].udata),
        (fd, Filter::Read, 42)
    );
    assert!(!events[0].flags.contains(Flags::EOF));
    // Still readable, but the one-shot registration is gone.
    assert!(wait(kq, &[], 0).is_empty());
    // So deleting it fails with ENOENT, reported as an ERROR event.
    let delete = Change::new(fd, Filter::Read, Flags::DELETE, 0);
    let events = wait(kq, &[delete], 0);
    assert_eq!(events.len(), 1);
    assert!(events[0].flags.contains(Flags::ERROR));
    assert_eq!(
        events[0].data,
        i64::from(rustix::io::Errno::NOENT.raw_os_error())
    );
}

fn peer_close_is_eof<K: Kevent>(kq: &mut K) {
    let (a, b) = UnixStream::pair().unwrap();
    let fd = a.as_raw_fd() as usize;
    drop(b);
    let add = Change::new(fd, Filter::Read, Flags::ADD | Flags::ONESHOT, 1);
    let events = wait(kq, &[add], 1000);
    assert_eq!(events.len(), 1);
    assert!(events[0].flags.contains(Flags::EOF));
}

fn write_is_ready_on_a_fresh_socket<K: Kevent>(kq: &mut K) {
    let (a, _b) = UnixStream::pair().unwrap();
    let fd = a.as_raw_fd() as usize;
    let add = Change::new(fd, Filter::Write, Flags::ADD | Flags::ONESHOT, 9);
    let events = wait(kq, &[add], 1000);
    assert_eq!(events.len(), 1);
    assert_eq!((events[0].filter, events[0].udata), (Filter::Write, 9));
}

fn adding_a_closed_descriptor_is_ebadf<K: Kevent>(kq: &mut K) {
    let add = Change::new(1 << 20, Filter::Read, Flags::ADD | Flags::ONESHOT, 3);
    let events = wait(kq, &[add], 1000);
    assert_eq!(events.len(), 1);
    assert!(events[0].flags.contains(Flags::ERROR));
    assert_eq!(
        events[0].data,
        i64::from(rustix::io::Errno::BADF.raw_os_error())
    );
    assert_eq!(events[0].udata, 3);
}

fn user_event_from_another_thread_wakes_a_wait<K: Kevent>(kq: &mut K) {
    let add = Change::new(USER, Filter::User, Flags::ADD | Flags::CLEAR, 77);
    assert!(wait(kq, &[add], 0).is_empty());
    let notifier = kq.notifier(USER);
    let thread = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(20));
        notifier.notify().unwrap();
    });
    let start = Instant::now();
    let events = wait(kq, &[], 10_000);
    thread.join().unwrap();
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "the notifier woke the wait"
    );
    assert_eq!(events.len(), 1);
    assert_eq!((events[0].filter, events[0].udata), (Filter::User, 77));
    // EV_CLEAR: one trigger, one event.
    assert!(wait(kq, &[], 0).is_empty());
}

fn a_timeout_is_never_early<K: Kevent>(kq: &mut K) {
    let start = Instant::now();
    let mut events = [Event::EMPTY; 1];
    let n = kq
        .kevent(&[], &mut events, Some(Duration::from_micros(2500)))
        .unwrap();
    assert_eq!(n, 0);
    assert!(start.elapsed() >= Duration::from_micros(2500));
}

/// A notifier kept after its kqueue is dropped (a loop's waker outliving the loop) notifies
/// harmlessly, however often: no error, no `SIGPIPE`. More notifications than the double's
/// wake pipe holds (64 KiB on Linux) also cover the full pipe.
fn a_notifier_outliving_its_kqueue_is_harmless<K: Kevent>(mut kq: K) {
    let add = Change::new(USER, Filter::User, Flags::ADD | Flags::CLEAR, 5);
    assert!(wait(&mut kq, &[add], 0).is_empty());
    let notifier = kq.notifier(USER);
    notifier.notify().unwrap();
    assert_eq!(wait(&mut kq, &[], 1000).len(), 1, "the notifier works");
    drop(kq);
    for _ in 0..(1 << 17) {
        notifier.notify().unwrap();
    }
}

/// `EV_CLEAR`: reported once per change of state, not while the state lasts; the state found
/// when added is reported once; a peer's close is a change too, with `EV_EOF`.
fn clear_read_reports_each_change_once<K: Kevent>(kq: &mut K) {
    let (a, mut b) = UnixStream::pair().unwrap();
    let fd = a.as_raw_fd() as usize;
    b.write_all(b"x").unwrap();
    let add = Change::new(fd, Filter::Read, Flags::ADD | Flags::CLEAR, 9);
    let events = wait(kq, &[add], 1000);
    assert_eq!(events.len(), 1, "readable when added: reported once");
    assert_eq!((events[0].ident, events[0].udata), (fd, 9));
    assert!(wait(kq, &[], 0).is_empty(), "still readable, but cleared");
    b.write_all(b"y").unwrap();
    assert_eq!(wait(kq, &[], 1000).len(), 1, "new bytes: a new edge");
    assert!(wait(kq, &[], 0).is_empty());
    drop(b);
    let events = wait(kq, &[], 1000);
    assert_eq!(events.len(), 1, "the peer's close: a new edge");
    assert!(events[0].flags.contains(Flags::EOF));
    let delete = Change::new(fd, Filter::Read, Flags::DELETE, 0);
    assert!(wait(kq, &[delete], 0).is_empty());
}

/// Closing a number drops its `EV_CLEAR` registration, even while a `dup` keeps the file
/// open: edges of the file no longer reach the old registration.
fn closing_a_number_drops_its_clear_registration<K: Kevent>(kq: &mut K) {
    let (a, mut b) = UnixStream::pair().unwrap();
    let keep = a.try_clone().unwrap();
    let fd = a.as_raw_fd() as usize;
    let add = Change::new(fd, Filter::Read, Flags::ADD | Flags::CLEAR, 5);
    assert!(wait(kq, &[add], 0).is_empty());
    drop(a);
    b.write_all(b"z").unwrap();
    assert!(wait(kq, &[], 50).is_empty(), "the number was closed");
    let delete = Change::new(fd, Filter::Read, Flags::DELETE, 0);
    let events = wait(kq, &[delete], 0);
    assert_eq!(events.len(), 1);
    assert!(
        events[0].flags.contains(Flags::ERROR),
        "no registration left to delete"
    );
    drop(keep);
}

fn check<K: Kevent>(mut kq: K) {
    clear_read_reports_each_change_once(&mut kq);
    closing_a_number_drops_its_clear_registration(&mut kq);
    one_shot_read_fires_once_with_its_udata(&mut kq);
    peer_close_is_eof(&mut kq);
    write_is_ready_on_a_fresh_socket(&mut kq);
    adding_a_closed_descriptor_is_ebadf(&mut kq);
    user_event_from_another_thread_wakes_a_wait(&mut kq);
    a_timeout_is_never_early(&mut kq);
}

#[test]
fn the_double_keeps_the_contract() {
    check(Fake::new(16).unwrap());
}

#[test]
fn a_notifier_outliving_the_double_is_harmless() {
    a_notifier_outliving_its_kqueue_is_harmless(Fake::new(16).unwrap());
}

#[cfg(any(target_os = "freebsd", target_vendor = "apple"))]
#[test]
fn a_notifier_outliving_the_real_kqueue_is_harmless() {
    a_notifier_outliving_its_kqueue_is_harmless(sys_kqueue::System::new(16, 16).unwrap());
}

#[cfg(any(target_os = "freebsd", target_vendor = "apple"))]
#[test]
fn the_real_kqueue_keeps_the_contract() {
    check(sys_kqueue::System::new(16, 16).unwrap());
}

#[test]
fn the_changelist_never_grows() {
    let mut changes = Changelist::with_capacity(2);
    let change = Change::new(0, Filter::Read, Flags::ADD, 0);
    changes.push(change).unwrap();
    changes.push(change).unwrap();
    assert_eq!(changes.push(change), Err(ChangelistFull));
    assert_eq!(changes.len(), 2);
    changes.clear();
    assert!(changes.is_empty());
    assert_eq!(changes.capacity(), 2);
}
