//! `--udp`: datagrams echoed to their sender on the TCP port number, on every backend, while
//! TCP is served on the same port; a datagram of exactly `--buffer-size` bytes comes back
//! whole, a longer one is counted as truncated and not echoed (never echoed cut short); many
//! clients on both threads' sockets (`SO_REUSEPORT`) each get their own datagrams back; a
//! client gone before its echo costs nothing; the summary counts UDP apart.

use std::net::UdpSocket;
use std::time::Duration;

use crate::check::{self, Backend, Options, Rng, Signal};

every_backend!(
    udp_echo_sizes_and_tcp_beside,
    udp_many_clients,
    udp_client_gone
);

/// How long a test waits for one echo before it sends the datagram again (loopback does not
/// lose datagrams unless its buffers overflow; the retries make that no failure).
const ECHO_WAIT: Duration = Duration::from_secs(2);

/// How long a test waits to be sure a datagram is not echoed.
const SILENCE: Duration = Duration::from_millis(300);

/// A client socket on loopback with [`ECHO_WAIT`] on receives.
fn client() -> UdpSocket {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("a UDP socket");
    socket.set_read_timeout(Some(ECHO_WAIT)).unwrap();
    socket
}

/// Sends `datagram` to `server` and checks that exactly it comes back from `server`,
/// sending again (up to 3 times) when nothing comes.
fn udp_echo(socket: &UdpSocket, server: std::net::SocketAddr, datagram: &[u8]) {
    let mut reply = vec![0; 70_000];
    for _ in 0..3 {
        socket.send_to(datagram, server).expect("send");
        match socket.recv_from(&mut reply) {
            Ok((n, from)) => {
                assert_eq!(from, server, "the echo comes from the server's port");
                check::assert_same(datagram, &reply[..n]);
                return;
            }
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock) => continue,
            Err(e) => panic!("receive the echo of {} bytes: {e}", datagram.len()),
        }
    }
    panic!("no echo of {} bytes after 3 tries", datagram.len());
}

/// One thread, `--buffer-size 2048`: 1, 100 and exactly 2,048 bytes come back whole, an
/// empty datagram too; 2,049 bytes are not echoed (counted as truncated); a TCP client on
/// the same port is echoed meanwhile; the summary's UDP lines add up.
fn udp_echo_sizes_and_tcp_beside(backend: Backend) {
    let mut options = Options::new(backend);
    options.threads = 1;
    options.args = &["--udp", "--buffer-size", "2048"];
    let Some(server) = check::start(&options) else {
        return;
    };
    let mut rng = Rng::from_env("udp_echo_sizes_and_tcp_beside");
    let addr = server.addr();
    let socket = client();
    let mut tcp = server.connect();
    let mut echoed = 0;
    for len in [1, 100, 2048, 0] {
        udp_echo(&socket, addr, &rng.bytes(len));
        check::echo(&mut tcp, format!("tcp beside {len}").as_bytes());
        echoed += 1;
    }
    socket.send_to(&rng.bytes(2049), addr).expect("send");
    socket.set_read_timeout(Some(SILENCE)).unwrap();
    let mut reply = [0; 4096];
    let silent = socket.recv_from(&mut reply);
    assert!(
        silent.is_err(),
        "a truncated datagram was echoed: {silent:?}"
    );
    socket.set_read_timeout(Some(ECHO_WAIT)).unwrap();
    udp_echo(&socket, addr, b"after the truncated one");
    echoed += 1;
    check::echo(&mut tcp, b"tcp still served");
    drop(tcp);
    let stopped = server.stop(Signal::TERM);
    assert!(stopped.status.success(), "{stopped:?}");
    let summary = &stopped.summary;
    assert_eq!(summary.count("udp truncated"), 1, "{stopped:?}");
    assert_eq!(summary.count("udp errors"), 0, "{stopped:?}");
    // A datagram sent again (no echo within the wait) is echoed twice.
    assert!(summary.count("udp echoed") >= echoed, "{stopped:?}");
    assert_eq!(
        summary.count("udp echoed"),
        summary.count("udp datagrams"),
        "{stopped:?}"
    );
    assert_eq!(summary.count("connections"), 1, "{stopped:?}");
}

/// Two threads, 16 client sockets on 4 client threads (spread over both server sockets by
/// the kernel's `SO_REUSEPORT` hash), 50 datagrams each with the client's number and a
/// sequence number, each answered with exactly itself; a TCP round trip meanwhile.
fn udp_many_clients(backend: Backend) {
    let mut options = Options::new(backend);
    options.args = &["--udp"];
    let Some(server) = check::start(&options) else {
        return;
    };
    let addr = server.addr();
    let clients: Vec<_> = (0..4_u32)
        .map(|thread| {
            std::thread::spawn(move || {
                let sockets: Vec<UdpSocket> = (0..4).map(|_| client()).collect();
                for seq in 0..50_u32 {
                    for (i, socket) in sockets.iter().enumerate() {
                        let datagram = format!("client {thread}.{i} datagram {seq:03}");
                        udp_echo(socket, addr, datagram.as_bytes());
                    }
                }
            })
        })
        .collect();
    let data = std::sync::Arc::new(Rng::from_env("udp_many_clients").bytes(1 << 20));
    let back = check::round_trip(server.connect(), std::sync::Arc::clone(&data));
    check::assert_same(&data, &back);
    for client in clients {
        client.join().expect("a UDP client thread failed");
    }
    let stopped = server.stop(Signal::TERM);
    assert!(stopped.summary.count("udp echoed") >= 800, "{stopped:?}");
    assert_eq!(stopped.summary.count("udp truncated"), 0, "{stopped:?}");
}

/// Clients that send and close before their echo comes (its port may answer the echo with
/// an ICMP port unreachable) leave the server serving, and its descriptors as they were.
fn udp_client_gone(backend: Backend) {
    let mut options = Options::new(backend);
    options.args = &["--udp"];
    let Some(mut server) = check::start(&options) else {
        return;
    };
    let baseline = server.settled_fd_count();
    let addr = server.addr();
    for i in 0..200_u32 {
        let gone = client();
        gone.send_to(format!("gone {i}").as_bytes(), addr).unwrap();
    }
    let socket = client();
    udp_echo(&socket, addr, b"still echoing");
    check::echo(&mut server.connect(), b"tcp still served");
    server.assert_alive();
    server.assert_fds_back_to(baseline);
}
