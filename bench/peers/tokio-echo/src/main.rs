//! tokio's current-thread echo server, written the usual way (a task per connection, a
//! 16 KiB buffer each): the peer the echo server is measured against. Prints `listening on
//! ADDR`; SIGTERM's or SIGINT's default action stops it (like the monoio and compio peers).
//! The runtime is built by hand rather than with `#[tokio::main]`, so that tokio's macros
//! (and syn) stay out of the build: `cargo xtask bench --quick` builds this from scratch in
//! CI, and the macro expands to the same builder call.
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn main() -> std::io::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:0".into());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    runtime.block_on(serve(&addr))
}

async fn serve(addr: &str) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("listening on {}", listener.local_addr()?);
    loop {
        let (mut socket, _) = match listener.accept().await {
            Ok(pair) => pair,
            Err(_) => continue,
        };
        let _ = socket.set_nodelay(true);
        tokio::spawn(async move {
            let mut buf = vec![0_u8; 16 * 1024];
            loop {
                let n = match socket.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                if socket.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        });
    }
}
