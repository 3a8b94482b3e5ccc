//! tokio's current-thread UDP echo server, written the usual way (one socket, a
//! `recv_from` then `send_to` loop, a 64 KiB buffer): the peer the echo server's `--udp` is
//! measured against (the `udp-64B` scenario). Prints `listening on ADDR` like the TCP peers;
//! SIGTERM's or SIGINT's default action stops it. The runtime is built by hand, as in
//! tokio-echo, so that tokio's macros stay out of the build.

fn main() -> std::io::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:0".into());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    runtime.block_on(serve(&addr))
}

async fn serve(addr: &str) -> std::io::Result<()> {
    let socket = tokio::net::UdpSocket::bind(addr).await?;
    println!("listening on {}", socket.local_addr()?);
    let mut buf = vec![0_u8; 64 * 1024];
    loop {
        // A failed receive (an ICMP error queued by an earlier send) or send (a full
        // buffer) loses that datagram, as UDP may; the client counts it lost.
        let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
            continue;
        };
        let _ = socket.send_to(&buf[..n], peer).await;
    }
}
