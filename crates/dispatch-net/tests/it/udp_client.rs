//! `request` over loopback on whichever backend `DISPATCH_BACKEND` selects: a response
//! handed on, a lost first datagram answered on the retry, and a server that never answers
//! timing out after every try, each try sent.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use dispatch_loop::{Io, Msg, Options, PoolOptions};
use dispatch_net::{bind_udp, request, serve_udp, ListenOptions, Reply, RequestError};
use dispatch_net::{RequestOptions, Udp, UdpClient, UdpClientHandler, UdpHandler, UdpOptions};

struct Both {
    udp: Udp,
    client: UdpClient,
    /// The server drops this many datagrams before it answers.
    drop_first: u32,
    got: Vec<io::Result<Vec<u8>>>,
}

impl UdpHandler for Both {
    fn udp(&mut self) -> &mut Udp {
        &mut self.udp
    }

    fn on_datagram(&mut self, _: &mut Io<Self>, msg: &mut Msg, from: SocketAddr) -> Reply {
        if self.drop_first > 0 {
            self.drop_first -= 1;
            return Reply::Nothing;
        }
        msg.bufs_mut()[0].make_ascii_uppercase();
        Reply::SendTo(from)
    }
}

impl UdpClientHandler for Both {
    fn udp_client(&mut self) -> &mut UdpClient {
        &mut self.client
    }

    fn on_response(&mut self, _: &mut Io<Self>, response: io::Result<&Msg>) {
        self.got.push(response.map(|msg| msg.bufs()[0].clone()));
    }
}

/// A loop's options for serving `udp` with `ops_max` slots: a pool whose buffers hold its
/// datagrams whole.
fn pooled(udp: &UdpOptions, ops_max: u32) -> Options {
    let mut options = Options::new(ops_max);
    options.pool = PoolOptions::new(16, udp.pool_buffer_size());
    options
}

/// A served UDP server (unless `to` names another address) and a client of it, on one loop.
fn setup(drop_first: u32, to: Option<SocketAddr>, options: &RequestOptions) -> (Io<Both>, Both) {
    let udp_options = UdpOptions::new(4, 256);
    let ops = udp_options.ops_max() + options.ops_max();
    let mut io = Io::new(&pooled(&udp_options, ops)).expect("a backend");
    let socket = bind_udp("127.0.0.1:0".parse().unwrap(), &ListenOptions::new()).unwrap();
    let server = to.unwrap_or(socket.local_addr().unwrap());
    let client_socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut both = Both {
        udp: Udp::new(&udp_options),
        client: UdpClient::new(client_socket, server, options),
        drop_first,
        got: Vec::new(),
    };
    serve_udp(&mut both, &mut io, socket).unwrap();
    (io, both)
}

fn run_until_answered(io: &mut Io<Both>, both: &mut Both, n: usize) {
    for _ in 0..3000 {
        if both.got.len() == n {
            return;
        }
        io.run_for_ns(both, 10_000_000).unwrap();
    }
    panic!("no answer after 3,000 turns");
}

#[test]
fn a_request_gets_its_response_and_one_at_a_time() {
    let (mut io, mut both) = setup(0, None, &RequestOptions::new(2_000_000_000, 3));
    request(&mut both, &mut io, b"ping").unwrap();
    assert_eq!(
        request(&mut both, &mut io, b"again"),
        Err(RequestError::Busy)
    );
    run_until_answered(&mut io, &mut both, 1);
    request(&mut both, &mut io, b"second").unwrap();
    run_until_answered(&mut io, &mut both, 2);
    assert_eq!(both.got[0].as_deref().unwrap(), b"PING");
    assert_eq!(both.got[1].as_deref().unwrap(), b"SECOND");
    let stats = both.client.stats();
    assert_eq!((stats.requests, stats.responses, stats.retries), (2, 2, 0));
}

#[test]
fn a_lost_datagram_is_answered_on_the_retry() {
    let (mut io, mut both) = setup(1, None, &RequestOptions::new(50_000_000, 3));
    request(&mut both, &mut io, b"retry me").unwrap();
    run_until_answered(&mut io, &mut both, 1);
    assert_eq!(both.got[0].as_deref().unwrap(), b"RETRY ME");
    assert_eq!(both.client.stats().retries, 1);
}

#[test]
fn a_server_that_never_answers_times_out_after_every_try() {
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let to = silent.local_addr().unwrap();
    let (mut io, mut both) = setup(0, Some(to), &RequestOptions::new(20_000_000, 3));
    request(&mut both, &mut io, b"anyone?").unwrap();
    run_until_answered(&mut io, &mut both, 1);
    let error = both.got[0].as_ref().unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::TimedOut, "{error}");
    let stats = both.client.stats();
    assert_eq!((stats.retries, stats.timeouts, stats.responses), (2, 1, 0));
    silent
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    for _ in 0..3 {
        let mut datagram = [0; 16];
        let n = silent.recv(&mut datagram).unwrap();
        assert_eq!(&datagram[..n], b"anyone?", "every try was sent");
    }
}

/// On the simulator with 30% of datagrams lost and 10% doubled: 50 requests in turn, each
/// answered within 10 tries of 5 ms (virtual time), some only after retries. A response may
/// be a late one to an earlier request (documented: requests are idempotent), never anything
/// that was not a response.
#[test]
fn requests_get_through_datagram_loss_on_the_simulator() {
    use dispatch_loop::sim::{Sim, SimOptions};
    let mut sim_options = SimOptions::new(21);
    sim_options.faults.datagram_loss = 300_000;
    sim_options.faults.datagram_duplicate = 100_000;
    let sim = Sim::new(&sim_options).unwrap();
    let udp_options = UdpOptions::new(4, 256);
    let options = RequestOptions::new(5_000_000, 10);
    let ops = udp_options.ops_max() + options.ops_max();
    let mut io = Io::new_sim(&pooled(&udp_options, ops), &sim).unwrap();
    let (socket, server) = sim.udp_bind("10.3.3.3:53".parse().unwrap()).unwrap();
    let (client_socket, _) = sim.udp_bind("10.3.3.4:0".parse().unwrap()).unwrap();
    let mut both = Both {
        udp: Udp::new(&udp_options),
        client: UdpClient::new(client_socket, server, &options),
        drop_first: 0,
        got: Vec::new(),
    };
    serve_udp(&mut both, &mut io, socket).unwrap();
    let mut answers: Vec<Vec<u8>> = Vec::new();
    for i in 0..50 {
        let query = format!("query {i:02}");
        request(&mut both, &mut io, query.as_bytes()).unwrap();
        answers.push(query.to_uppercase().into_bytes());
        run_until_answered(&mut io, &mut both, i + 1);
        let got = both.got[i].as_ref().expect("answered within 10 tries");
        assert!(answers.contains(got), "{got:?} answers no request");
    }
    let stats = both.client.stats();
    assert_eq!((stats.responses, stats.timeouts), (50, 0));
    assert!(stats.retries > 0, "30% loss cost some retries: {stats:?}");
}
