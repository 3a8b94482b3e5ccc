//! compio's echo server on one thread (its io_uring driver, default ring set-up), written the
//! way its examples are (a task per connection, a 16 KiB owned buffer each): a peer the echo
//! server is measured against. Prints `listening on ADDR`; SIGTERM's default action stops it.
use compio::io::{AsyncRead, AsyncWriteExt};
use compio::net::{TcpListener, TcpStream};
use compio::BufResult;

#[compio::main]
async fn main() {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:0".into());
    let listener = TcpListener::bind(&addr).await.expect("bind");
    println!("listening on {}", listener.local_addr().expect("local address"));
    loop {
        let Ok((socket, _)) = listener.accept().await else {
            continue;
        };
        let _ = socket.set_nodelay(true);
        compio::runtime::spawn(echo(socket)).detach();
    }
}

async fn echo(mut socket: TcpStream) {
    let mut buf: Vec<u8> = Vec::with_capacity(16 * 1024);
    loop {
        let BufResult(result, read) = socket.read(buf).await;
        buf = read;
        match result {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let BufResult(result, written) = socket.write_all(buf).await;
        buf = written;
        if result.is_err() {
            return;
        }
        buf.clear();
    }
}
