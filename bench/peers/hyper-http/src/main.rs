//! hyper 1.x's HTTP/1.1 server on tokio's current-thread runtime (one thread, a task per
//! connection, keep-alive, `pipeline_flush(true)` as in TechEmpower's hyper entry): the peer
//! the project's HTTP example is measured against with wrk. Routes: `GET /plaintext` (200,
//! `text/plain`, `Hello, World!`) and `GET /json` (200, `application/json`,
//! `{"message":"Hello, World!"}`); anything else is 404. hyper adds `date` and
//! `content-length` itself. Takes the listen address as its argument and prints `listening on
//! ADDR` (like the echo peers); SIGTERM's or SIGINT's default action stops it. The runtime is
//! built by hand rather than with `#[tokio::main]`, so that tokio's macros stay out of the
//! build.
use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

const PLAINTEXT: &[u8] = b"Hello, World!";
const JSON: &[u8] = br#"{"message":"Hello, World!"}"#;

fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".into());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    runtime.block_on(serve(&addr))
}

async fn serve(addr: &str) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("listening on {}", listener.local_addr()?);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.keep_alive(true).pipeline_flush(true);
    loop {
        let (socket, _) = match listener.accept().await {
            Ok(pair) => pair,
            Err(_) => continue,
        };
        let _ = socket.set_nodelay(true);
        let connection =
            http.serve_connection(TokioIo::new(socket), hyper::service::service_fn(route));
        tokio::spawn(async move {
            // A peer that resets or sends garbage ends its own connection, nothing else.
            let _ = connection.await;
        });
    }
}

async fn route(
    request: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (status, content_type, body) = match (request.method(), request.uri().path()) {
        (&Method::GET, "/plaintext") => (StatusCode::OK, "text/plain", PLAINTEXT),
        (&Method::GET, "/json") => (StatusCode::OK, "application/json", JSON),
        _ => (StatusCode::NOT_FOUND, "text/plain", &b"Not Found"[..]),
    };
    let mut response = Response::new(Full::new(Bytes::from_static(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    Ok(response)
}
