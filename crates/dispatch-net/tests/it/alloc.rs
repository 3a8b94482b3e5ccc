//! No heap allocation per datagram: `serve_udp` echoing over loopback in steady state,
//! counted by a global allocator. The count is per thread (other tests run on their own
//! threads), kept in a const-initialised thread-local that never allocates; the client is a
//! blocking `std::net::UdpSocket` on the same thread, which allocates nothing either.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use dispatch_loop::{Io, Msg, Options, PoolOptions};
use dispatch_net::{bind_udp, serve_udp, ListenOptions, Reply, Udp, UdpHandler, UdpOptions};

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

struct Echo {
    udp: Udp,
}

impl UdpHandler for Echo {
    fn udp(&mut self) -> &mut Udp {
        &mut self.udp
    }

    fn on_datagram(&mut self, _: &mut Io<Self>, _: &mut Msg, from: SocketAddr) -> Reply {
        Reply::SendTo(from)
    }
}

/// One datagram sent, echoed by the loop, and received back.
fn round_trip(io: &mut Io<Echo>, echo: &mut Echo, client: &UdpSocket, addr: SocketAddr) {
    let sent = echo.udp.stats().sent;
    client.send_to(&[7; 64], addr).unwrap();
    // At most 5 s of 0.1 ms turns (a turn runs for its whole time).
    for _ in 0..50_000 {
        if echo.udp.stats().sent > sent {
            break;
        }
        io.run_for_ns(echo, 100_000).unwrap();
    }
    let mut reply = [0; 128];
    let (n, _) = client.recv_from(&mut reply).unwrap();
    assert_eq!(n, 64);
}

#[test]
fn serving_udp_allocates_nothing_per_datagram() {
    let before = allocations();
    drop(std::hint::black_box(Vec::<u8>::with_capacity(16)));
    assert_eq!(allocations(), before + 1, "the counting allocator counts");

    let options = UdpOptions::new(8, 1500);
    let mut loop_options = Options::new(options.ops_max());
    loop_options.pool = PoolOptions::new(16, options.pool_buffer_size());
    let mut io = Io::new(&loop_options).expect("a backend");
    let socket = bind_udp("127.0.0.1:0".parse().unwrap(), &ListenOptions::new()).unwrap();
    let addr = socket.local_addr().unwrap();
    let mut echo = Echo {
        udp: Udp::new(&options),
    };
    serve_udp(&mut echo, &mut io, socket).unwrap();
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    for _ in 0..200 {
        round_trip(&mut io, &mut echo, &client, addr);
    }
    let before = allocations();
    for _ in 0..1000 {
        round_trip(&mut io, &mut echo, &client, addr);
    }
    let allocated = allocations() - before;
    assert_eq!(
        allocated, 0,
        "{allocated} allocations in 1,000 datagrams echoed"
    );
    assert_eq!(echo.udp.stats().sent, 1200);
}
