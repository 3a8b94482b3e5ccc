//! Waking the loop from another thread.

use std::io;
use std::sync::mpsc;
use std::time::Duration;

use dispatch_loop::{Io, Options, Tag};

use crate::check;

struct Woken {
    counts: Vec<u64>,
    ack: mpsc::Sender<()>,
}

fn on_wakeup(woken: &mut Woken, io: &mut Io<Woken>, tag: Tag, result: io::Result<u64>) {
    woken.counts.push(result.unwrap());
    if woken.counts.len() < 5 {
        io.wait_wakeup(tag, on_wakeup).unwrap();
    }
    woken.ack.send(()).unwrap();
}

#[test]
fn a_wake_from_another_thread_five_times() {
    let Some(mut io) = check::io::<Woken>(&Options::new(4)) else {
        return;
    };
    let (ack, acked) = mpsc::channel();
    let waker = io.waker();
    let thread = std::thread::spawn(move || {
        for _ in 0..5 {
            std::thread::sleep(Duration::from_millis(2));
            waker.wake().unwrap();
            acked
                .recv_timeout(Duration::from_secs(10))
                .expect("the loop acknowledges");
        }
    });
    let mut woken = Woken {
        counts: Vec::new(),
        ack,
    };
    io.wait_wakeup(1, on_wakeup).unwrap();
    io.run_until_idle(&mut woken).unwrap();
    thread.join().unwrap();
    assert_eq!(woken.counts, vec![1; 5]);
}

#[test]
fn wakes_before_the_wait_are_counted_not_lost() {
    let Some(mut io) = check::io::<Woken>(&Options::new(4)) else {
        return;
    };
    let (ack, _acked) = mpsc::channel();
    let waker = io.waker();
    std::thread::spawn(move || {
        waker.wake().unwrap();
        waker.wake().unwrap();
    })
    .join()
    .unwrap();
    let mut woken = Woken {
        counts: vec![0; 4],
        ack,
    };
    io.wait_wakeup(1, on_wakeup).unwrap();
    io.run_until_idle(&mut woken).unwrap();
    assert_eq!(
        woken.counts[4], 2,
        "two wake-ups coalesce into one completion"
    );
}
