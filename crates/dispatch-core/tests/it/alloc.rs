//! Zero heap allocations per operation in steady state, counted by a global allocator.
//!
//! The count is per thread (other tests run concurrently on their own threads), kept in a
//! const-initialised thread-local that itself never allocates.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::TcpStream;
use std::os::fd::AsRawFd;

use dispatch_core::{BufResult, Io, Options, Tag};

use crate::check;

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

#[allow(unsafe_code)]
// SAFETY: every method forwards to `System` unchanged; counting touches only a thread-local.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|count| count.set(count.get() + 1));
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract, forwarded as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with `layout`, per the caller's contract.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|count| count.set(count.get() + 1));
        // SAFETY: forwarded unchanged under the caller's contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

const MESSAGE: usize = 64;
const ROUNDS: u64 = 25_000;

/// A ping-pong: client sends, server receives and echoes, client receives: four operations a
/// round, each scheduled from the previous one's callback with the same buffer.
struct PingPong {
    client: TcpStream,
    server: TcpStream,
    rounds_left: u64,
    ops: u64,
    allocations_at_warm: Option<u64>,
}

const CLIENT_SEND: Tag = 0;
const SERVER_RECV: Tag = 1;
const SERVER_SEND: Tag = 2;
const CLIENT_RECV: Tag = 3;

fn on_done(pp: &mut PingPong, io: &mut Io<PingPong>, tag: Tag, (result, mut buf): BufResult) {
    let n = result.unwrap();
    assert_eq!(n, MESSAGE, "loopback moves 64 bytes whole");
    pp.ops += 1;
    let (client, server) = (pp.client.as_raw_fd(), pp.server.as_raw_fd());
    match tag {
        CLIENT_SEND => {
            buf.clear();
            io.recv(SERVER_RECV, server, buf, on_done).unwrap();
        }
        SERVER_RECV => {
            io.send(SERVER_SEND, server, buf, on_done).unwrap();
        }
        SERVER_SEND => {
            buf.clear();
            io.recv(CLIENT_RECV, client, buf, on_done).unwrap();
        }
        CLIENT_RECV => {
            pp.rounds_left -= 1;
            if pp.rounds_left == ROUNDS - 100 {
                pp.allocations_at_warm = Some(allocations());
            }
            if pp.rounds_left > 0 {
                io.send(CLIENT_SEND, client, buf, on_done).unwrap();
            }
        }
        _ => unreachable!(),
    }
}

#[test]
fn a_hundred_thousand_sends_and_receives_allocate_nothing() {
    let Some(mut io) = check::io::<PingPong>(&Options::new(8)) else {
        return;
    };
    let (client, server) = check::tcp_pair();
    let mut pp = PingPong {
        client,
        server,
        rounds_left: ROUNDS,
        ops: 0,
        allocations_at_warm: None,
    };
    io.send(
        CLIENT_SEND,
        pp.client.as_raw_fd(),
        vec![7; MESSAGE],
        on_done,
    )
    .unwrap();
    io.run_until_idle(&mut pp).unwrap();
    let after = allocations();
    assert_eq!(pp.ops, ROUNDS * 4);
    assert!(pp.ops >= 100_000);
    let warm = pp.allocations_at_warm.expect("warm-up finished");
    assert_eq!(
        after - warm,
        0,
        "allocations in steady state over {} operations",
        pp.ops
    );
    eprintln!("{:?}", io.stats());
}
