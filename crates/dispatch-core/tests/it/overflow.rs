//! A small submission queue carrying many operations, and one syscall per batch.

use std::io;

use dispatch_loop::{BufResult, Io, Options, Tag};

use crate::check;

#[derive(Default)]
struct Count {
    done: Vec<Tag>,
}

fn on_timeout(count: &mut Count, _: &mut Io<Count>, tag: Tag, result: io::Result<()>) {
    result.unwrap();
    count.done.push(tag);
}

#[test]
fn a_ring_of_four_entries_carries_a_thousand_operations() {
    let mut options = Options::new(1000);
    options.uring.sq_entries = 4;
    let Some(mut io) = check::io::<Count>(&options) else {
        return;
    };
    let mut count = Count::default();
    for tag in 0..1000 {
        io.timeout(tag, 1_000, on_timeout).unwrap();
    }
    // Only io_uring has a submission queue; readiness backends take every operation.
    let uring = check::on_io_uring(&io);
    let stats = io.stats();
    assert_eq!(stats.ops_submitted, if uring { 4 } else { 1000 });
    assert_eq!(stats.overflow_parked, if uring { 996 } else { 0 });
    assert_eq!(stats.overflow_len_max, if uring { 996 } else { 0 });
    io.run_until_idle(&mut count).unwrap();
    count.done.sort_unstable();
    assert_eq!(
        count.done,
        (0..1000).collect::<Vec<_>>(),
        "every operation completed once"
    );
    let stats = io.stats();
    assert_eq!(stats.ops_submitted, 1000);
    assert_eq!(stats.ops_completed, 1000);
    assert!(!uring || stats.batch_max <= 4, "{stats:?}");
}

fn on_buf(count: &mut Count, _: &mut Io<Count>, tag: Tag, (result, _): BufResult) {
    result.unwrap();
    count.done.push(tag);
}

#[test]
fn operations_scheduled_together_go_out_in_one_syscall() {
    let Some(mut io) = check::io::<Count>(&Options::new(64)) else {
        return;
    };
    let (client, server) = check::tcp_pair();
    for tag in 0..32 {
        io.send(tag, check::fd(&client), vec![tag as u8; 8], on_buf)
            .unwrap();
    }
    let before = io.stats();
    assert_eq!(before.syscalls, 0, "scheduling makes no syscall");
    let mut count = Count::default();
    io.tick(&mut count).unwrap();
    let after = io.stats();
    // io_uring: one io_uring_enter for the batch. Readiness backends: one send(2) each,
    // and no wait, since all completed.
    let expected = if check::on_io_uring(&io) { 1 } else { 32 };
    assert_eq!(after.syscalls, expected, "{after:?}");
    assert_eq!(after.batch_max, 32);
    // Sends on a connected loopback socket complete inline, within that one syscall.
    assert_eq!(count.done.len(), 32);
    let mut received = vec![0_u8; 256];
    let mut server = server;
    std::io::Read::read_exact(&mut server, &mut received).unwrap();
    let expected: Vec<u8> = (0..32).flat_map(|tag| [tag as u8; 8]).collect();
    assert_eq!(received, expected, "sends on one socket keep their order");
}
