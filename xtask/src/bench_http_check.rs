//! The HTTP servers' answers, checked before wrk runs: wrk counts responses and their status
//! but reads no body, so a server answering the wrong bytes quickly would win. On one
//! connection: `GET /plaintext` and `GET /json` in one write (pipelining), then `GET
//! /plaintext` again (keep-alive). Each response must be `200`, with the route's content
//! type, a `content-length` and exactly the route's body, and must not close the
//! connection. A failed check fails the run.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// What one route must answer.
struct Route {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const PLAINTEXT: Route = Route {
    path: "/plaintext",
    content_type: "text/plain",
    body: b"Hello, World!",
};

const JSON: Route = Route {
    path: "/json",
    content_type: "application/json",
    body: br#"{"message":"Hello, World!"}"#,
};

/// A wait on the server longer than this fails the check.
const TIMEOUT: Duration = Duration::from_secs(5);

/// Checks both routes on `addr` (`127.0.0.1:PORT`); the error names the route and what was
/// wrong.
pub fn routes(addr: &str) -> Result<(), String> {
    let socket_addr = addr.parse().map_err(|e| format!("{addr}: {e}"))?;
    let mut stream = TcpStream::connect_timeout(&socket_addr, TIMEOUT)
        .map_err(|e| format!("connecting to {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(TIMEOUT))
        .map_err(|e| e.to_string())?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let both = [request(&PLAINTEXT), request(&JSON)].concat();
    stream
        .write_all(&both)
        .map_err(|e| format!("sending: {e}"))?;
    let mut buffer = Vec::new();
    for route in [&PLAINTEXT, &JSON] {
        let response = read_response(&mut stream, &mut buffer);
        check(route, response).map_err(|e| format!("pipelined GET {}: {e}", route.path))?;
    }
    stream
        .write_all(&request(&PLAINTEXT))
        .map_err(|e| format!("sending on the kept-alive connection: {e}"))?;
    let response = read_response(&mut stream, &mut buffer);
    check(&PLAINTEXT, response).map_err(|e| format!("second GET /plaintext: {e}"))?;
    if !buffer.is_empty() {
        return Err(format!("{} bytes after the last response", buffer.len()));
    }
    Ok(())
}

fn request(route: &Route) -> Vec<u8> {
    format!("GET {} HTTP/1.1\r\nHost: bench\r\n\r\n", route.path).into_bytes()
}

/// A response as read: the status code, the header lines and the body.
#[derive(Debug)]
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    /// The value of header `name` (any case), if present.
    fn header(&self, name: &str) -> Option<&str> {
        let header = self
            .headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name));
        header.map(|(_, value)| value.as_str())
    }
}

fn check(route: &Route, response: Result<Response, String>) -> Result<(), String> {
    let response = response?;
    if response.status != 200 {
        return Err(format!("status {}, not 200", response.status));
    }
    let content_type = response.header("content-type").unwrap_or("(none)");
    if !content_type
        .to_ascii_lowercase()
        .starts_with(route.content_type)
    {
        return Err(format!(
            "content-type {content_type}, not {}",
            route.content_type
        ));
    }
    if response.body != route.body {
        let body = String::from_utf8_lossy(&response.body);
        return Err(format!(
            "body {body:?}, not {:?}",
            String::from_utf8_lossy(route.body)
        ));
    }
    if response
        .header("connection")
        .is_some_and(|v| v.eq_ignore_ascii_case("close"))
    {
        return Err("`connection: close` on a keep-alive request".into());
    }
    Ok(())
}

/// Reads one response from `stream`, taking what arrived beyond it back into `buffer`.
fn read_response(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> Result<Response, String> {
    let head_len = loop {
        if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        fill(stream, buffer)?;
    };
    let head = String::from_utf8_lossy(&buffer[..head_len]).into_owned();
    let (status, headers) = parse_head(&head)?;
    let mut response = Response {
        status,
        headers,
        body: Vec::new(),
    };
    if response.header("transfer-encoding").is_some() {
        return Err("a chunked body: the check reads content-length bodies only".into());
    }
    let length: usize = response
        .header("content-length")
        .ok_or("no content-length")?
        .parse()
        .map_err(|_| "content-length is not a number")?;
    while buffer.len() < head_len + length {
        fill(stream, buffer)?;
    }
    response.body = buffer[head_len..head_len + length].to_vec();
    buffer.drain(..head_len + length);
    Ok(response)
}

/// Appends what the next read brings; an end of stream or a timeout is an error.
fn fill(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> Result<(), String> {
    let mut chunk = [0_u8; 4096];
    match stream.read(&mut chunk) {
        Ok(0) => Err("the server closed the connection".into()),
        Ok(n) => {
            buffer.extend_from_slice(&chunk[..n]);
            Ok(())
        }
        Err(e) => Err(format!("reading: {e}")),
    }
}

/// The status code and the headers of a response head (ending with its blank line).
fn parse_head(head: &str) -> Result<(u16, Vec<(String, String)>), String> {
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("status line {status_line:?}, not `HTTP/1.1 CODE ...`"))?;
    let mut headers = Vec::new();
    for line in lines.filter(|line| !line.is_empty()) {
        let (key, value) = line
            .split_once(':')
            .ok_or_else(|| format!("header line {line:?} has no colon"))?;
        headers.push((key.trim().to_owned(), value.trim().to_owned()));
    }
    Ok((status, headers))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(head: &str, body: &[u8]) -> Result<Response, String> {
        let (status, headers) = parse_head(head)?;
        Ok(Response {
            status,
            headers,
            body: body.to_vec(),
        })
    }

    #[test]
    fn a_right_answer_passes_and_each_wrong_one_says_why() {
        let head = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\ncontent-length: 13\r\n\r\n";
        assert_eq!(check(&PLAINTEXT, response(head, b"Hello, World!")), Ok(()));
        let wrong = check(&PLAINTEXT, response(head, b"Hello, world!")).unwrap_err();
        assert!(wrong.starts_with("body"), "{wrong}");
        let wrong = check(&JSON, response(head, JSON.body)).unwrap_err();
        assert!(wrong.starts_with("content-type text/plain"), "{wrong}");
        let missing = "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(
            check(&JSON, response(missing, b"")).unwrap_err(),
            "status 404, not 200"
        );
        let closing =
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nConnection: close\r\n\r\n";
        assert!(check(&JSON, response(closing, JSON.body)).is_err());
        assert!(parse_head("HTTP/1.0 200 OK\r\n\r\n").is_err());
    }
}
