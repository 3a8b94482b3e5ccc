//! The simulator's datagram reordering fault, its Unix socket pairs (stream and datagram) and
//! descriptor passing over them (`SCM_RIGHTS`), through the public API only: what each does,
//! its error cases, and that nothing passed leaks whichever way a message ends.

use std::io;
use std::os::fd::AsRawFd;

use dispatch_loop::sim::{Sim, SimOptions};
use dispatch_loop::{Io, Msg, Options, Tag};

/// What the receiver of numbered datagrams saw.
struct Numbers {
    fd: i32,
    got: Vec<u16>,
}

fn on_number(
    c: &mut Numbers,
    io: &mut Io<Numbers>,
    _: Tag,
    (n, mut msg): (io::Result<usize>, Msg),
) {
    assert_eq!(n.unwrap(), 2);
    let buf = &mut msg.bufs_mut()[0];
    c.got.push(u16::from_be_bytes([buf[0], buf[1]]));
    buf.clear();
    io.recv_from(0, c.fd, msg, on_number).unwrap();
}

/// 100 numbered datagrams from one socket to another, with only the reorder fault (at
/// `reorder_ppm`): the numbers in the order they arrived.
fn numbered_run(seed: u64, reorder_ppm: u32) -> Vec<u16> {
    let mut options = SimOptions::new(seed);
    options.faults.datagram_reorder = reorder_ppm;
    let sim = Sim::new(&options).unwrap();
    let mut io: Io<Numbers> = Io::new_sim(&Options::new(128), &sim).unwrap();
    let (a, _) = sim.udp_bind("10.0.0.1:0".parse().unwrap()).unwrap();
    let (b, b_addr) = sim.udp_bind("10.0.0.2:0".parse().unwrap()).unwrap();
    let mut numbers = Numbers {
        fd: b.as_raw_fd(),
        got: Vec::new(),
    };
    io.recv_from(0, b.as_raw_fd(), Msg::new(Vec::with_capacity(2)), on_number)
        .unwrap();
    for number in 0..100_u16 {
        let msg = Msg::new(number.to_be_bytes().to_vec());
        let sent = |_: &mut Numbers, _: &mut Io<Numbers>, _, (n, _): (io::Result<usize>, Msg)| {
            assert_eq!(n.unwrap(), 2);
        };
        io.send_to(1, a.as_raw_fd(), msg, b_addr, sent).unwrap();
        // Sends spread over time, so that arrival order is not just one batch's.
        io.run_for_ns(&mut numbers, 5_000).unwrap();
    }
    io.run_for_ns(&mut numbers, 100_000_000).unwrap();
    let faults = sim.stats().faults.datagram_reorder;
    assert_eq!(faults > 0, reorder_ppm > 0 && faults > 0);
    assert_eq!(numbers.got.len(), 100, "no loss without the loss fault");
    numbers.got
}

#[test]
fn datagrams_keep_their_order_unless_the_reorder_fault_is_on() {
    let sorted: Vec<u16> = (0..100).collect();
    for seed in 0..8 {
        assert_eq!(
            numbered_run(seed, 0),
            sorted,
            "seed {seed}: reorder off keeps order"
        );
    }
    let reordered: Vec<u64> = (0..8)
        .filter(|&seed| numbered_run(seed, 200_000) != sorted)
        .collect();
    eprintln!("seeds whose datagrams were reordered: {reordered:?}");
    assert!(
        !reordered.is_empty(),
        "some seed reorders with the fault on"
    );
    for &seed in &reordered {
        assert_eq!(
            numbered_run(seed, 200_000),
            numbered_run(seed, 200_000),
            "one seed, one order"
        );
    }
}
