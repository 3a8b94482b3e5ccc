//! The README's taste of datagrams, as a program: a UDP echo socket on the loop (receive a
//! datagram and its sender with `recv_from`, send the same message back with `send_to`,
//! receive again into the same buffer), and a plain client that checks three echoes.
//!
//! ```text
//! cargo run -p examples --example datagrams
//! ```

use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::process::ExitCode;
use std::time::Duration;

use dispatch_loop::Options;

use dispatch_loop::{Io, Msg, Tag};

/// Receives a datagram on the echo socket; its callback sends it back to its sender.
fn listen(io: &mut Io<Echo>, echo: &Echo, msg: Msg) {
    io.recv_from(0, echo.fd, msg, on_datagram)
        .expect("a free slot");
}

type Done = (std::io::Result<usize>, Msg);

fn on_datagram(echo: &mut Echo, io: &mut Io<Echo>, _: Tag, (n, msg): Done) {
    n.expect("recvmsg");
    assert!(!msg.truncated(), "a datagram longer than the buffer");
    let from = msg.peer().expect("a UDP sender");
    io.send_to(0, echo.fd, msg, from, on_echoed)
        .expect("a free slot");
}

fn on_echoed(echo: &mut Echo, io: &mut Io<Echo>, _: Tag, (n, mut msg): Done) {
    n.expect("sendmsg");
    echo.echoed += 1;
    msg.bufs_mut()[0].clear(); // the same buffer receives the next datagram
    listen(io, echo, msg);
}

struct Echo {
    fd: std::os::fd::RawFd,
    echoed: u32,
}

fn main() -> ExitCode {
    let server = UdpSocket::bind("127.0.0.1:0").expect("a UDP socket");
    let client = UdpSocket::bind("127.0.0.1:0").expect("a UDP socket");
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("a timeout");
    let mut io = Io::new(&Options::new(4)).expect("a loop");
    let mut echo = Echo {
        fd: server.as_raw_fd(),
        echoed: 0,
    };
    listen(&mut io, &echo, Msg::new(Vec::with_capacity(1500)));
    for i in 0..3 {
        let ping = format!("ping {i}");
        let to = server.local_addr().expect("an address");
        client.send_to(ping.as_bytes(), to).expect("a send");
        // At most 5 s of 10 ms runs for the echo.
        for _ in 0..500 {
            if echo.echoed > i {
                break;
            }
            io.run_for_ns(&mut echo, 10_000_000).expect("a turn");
        }
        let mut reply = [0; 64];
        let (n, from) = client.recv_from(&mut reply).expect("an echo");
        if &reply[..n] != ping.as_bytes() || from != to {
            eprintln!("datagrams: {:?} from {from}, not {ping:?}", &reply[..n]);
            return ExitCode::FAILURE;
        }
    }
    let backend = io.stats().backend;
    println!("datagrams: echoed 3 datagrams on {backend:?}");
    ExitCode::SUCCESS
}
