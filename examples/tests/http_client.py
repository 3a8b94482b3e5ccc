"""Clients for examples/tests/http.rs: `python3 http_client.py MODE HOST PORT` talks to the
http example with raw sockets and http.client, prints `ok` when every reply is as expected,
and fails with a traceback otherwise. Every socket has a timeout, so no mode hangs.
"""

import http.client
import select
import socket
import sys
import threading
import time

HOST, PORT = sys.argv[2], int(sys.argv[3])
TIMEOUT = 10
PLAINTEXT = b"Hello, World!"
JSON = b'{"message":"Hello, World!"}'


def connect():
    sock = socket.create_connection((HOST, PORT), timeout=TIMEOUT)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


class Shared:
    """One buffered reader under several responses on one socket (an HTTPResponse closes
    its file when its body ends, and would lose bytes it read ahead)."""

    def __init__(self, sock):
        self.file = sock.makefile("rb")

    def makefile(self, *args, **kwargs):
        return self

    def readline(self, *args):
        return self.file.readline(*args)

    def read(self, *args):
        return self.file.read(*args)

    def readinto(self, buf):
        return self.file.readinto(buf)

    def close(self):
        pass


def response(shared):
    """The next response: (status, headers, body); a 100 Continue is skipped."""
    reply = http.client.HTTPResponse(shared)
    reply.begin()
    return reply.status, reply.headers, reply.read()


def expect(shared, status, body=None):
    got_status, headers, got_body = response(shared)
    assert got_status == status, (got_status, status, got_body)
    assert headers["Content-Length"] == str(len(got_body)), headers
    assert headers["Server"] == "dispatch", headers
    if body is not None:
        assert got_body == body, (got_body, body)
    return headers


def expect_closed(shared):
    """The server closes the connection: end of stream (a reset counts too)."""
    try:
        rest = shared.file.read()
    except ConnectionResetError:
        return
    assert rest == b"", rest


def get(path, version="1.1", extra=""):
    return f"GET {path} HTTP/{version}\r\nHost: t\r\n{extra}\r\n".encode()


def count(body):
    head = f"POST /count HTTP/1.1\r\nHost: t\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


def chunked(chunks, extra=""):
    head = f"POST /count HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n{extra}\r\n"
    body = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(c), c) for c in chunks)
    return head.encode() + body + b"0\r\nX-Trailer: t\r\n\r\n"


def pipelining():
    """Ten requests in one write, answered in order; bodies between them consumed; 300 in
    one write; a request split over several writes; http.client's keep-alive."""
    requests = [
        (get("/plaintext"), 200, PLAINTEXT),
        (get("/json"), 200, JSON),
        (get("/missing"), 404, b"Not Found\n"),
        (count(b"hello world"), 200, b"received 11 bytes\n"),
        (chunked([b"hello", b" world", b"!" * 5000]), 200, b"received 5011 bytes\n"),
        (get("/json?x=1"), 200, JSON),
        (count(b""), 200, b"received 0 bytes\n"),
        (chunked([b"a"], "Expect: 100-continue\r\n"), 200, b"received 1 bytes\n"),
        (get("/plaintext"), 200, PLAINTEXT),
        (get("/missing/again"), 404, b"Not Found\n"),
    ]
    sock = connect()
    shared = Shared(sock)
    sock.sendall(b"".join(request for request, _, _ in requests))
    for status, body in ((status, body) for _, status, body in requests):
        expect(shared, status, body)
    # More requests in one write than the send queue holds replies (64): parsing stops and
    # goes on once the replies are out.
    deep = [get("/plaintext"), get("/json"), chunked([b"xy"], "Expect: 100-continue\r\n")]
    sock.sendall(b"".join(deep * 100))
    for _ in range(100):
        expect(shared, 200, PLAINTEXT)
        expect(shared, 200, JSON)
        expect(shared, 200, b"received 2 bytes\n")
    for part in (b"GET /js", b"on HTTP/1.1\r\nHo", b"st: t\r\n\r", b"\n"):
        sock.sendall(part)
        time.sleep(0.05)
    expect(shared, 200, JSON)
    conn = http.client.HTTPConnection(HOST, PORT, timeout=TIMEOUT)
    conn.request("GET", "/plaintext")
    assert conn.getresponse().read() == PLAINTEXT
    first = conn.sock
    conn.request("POST", "/count", body=b"x" * 100_000)
    assert conn.getresponse().read() == b"received 100000 bytes\n"
    conn.request("GET", "/json")
    reply = conn.getresponse()
    assert (reply.status, reply.getheader("Content-Type")) == (200, "application/json")
    assert reply.read() == JSON
    assert conn.sock is first, "http.client had to reconnect: keep-alive broke"


def versions():
    """HTTP/1.0 closes unless it asks for keep-alive; HTTP/1.1 closes on request."""
    sock = connect()
    shared = Shared(sock)
    sock.sendall(get("/plaintext", "1.0"))
    assert expect(shared, 200, PLAINTEXT)["Connection"] == "close"
    expect_closed(shared)
    sock = connect()
    shared = Shared(sock)
    sock.sendall(get("/json", "1.0", "Connection: keep-alive\r\n"))
    assert expect(shared, 200, JSON)["Connection"] == "keep-alive"
    sock.sendall(get("/plaintext", "1.1", "Connection: close\r\n"))
    assert expect(shared, 200, PLAINTEXT)["Connection"] == "close"
    expect_closed(shared)


def refused(data, status, trickle=None):
    """Sends `data` (and `trickle`, from a thread, as the reply is read), expects `status`
    and a close."""
    sock = connect()
    shared = Shared(sock)
    sock.sendall(data)
    if trickle is not None:

        def send_rest():
            try:
                sock.sendall(trickle)
            except OSError:
                pass  # The server closed first: the reply is what is checked.

        threading.Thread(target=send_rest, daemon=True).start()
    assert expect(shared, status)["Connection"] == "close"
    expect_closed(shared)


def malformed():
    refused(b"\x01\x02 nonsense\r\n\r\n", 400)
    refused(b"GET /plaintext HTTP/1.1\r\nno colon here\r\n\r\n", 400)
    both = b"POST /count HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
    refused(both, 400)
    refused(b"GET /plaintext HTTP/1.1\r\n\r\n", 400)  # HTTP/1.1 without Host
    refused(chunked([b"abc"]).replace(b"3;ext", b"x;ext"), 400)
    # A good request ahead of a bad one in the same write is answered first.
    sock = connect()
    shared = Shared(sock)
    sock.sendall(get("/plaintext") + b"GET / HTTP/9\r\n\r\n")
    expect(shared, 200, PLAINTEXT)
    expect(shared, 400)
    expect_closed(shared)
    slow_reader()


def slow_reader():
    """A client that reads late, through a small receive buffer, and sends more after a bad
    request: the server's replies still sit in its send buffer when the 400 has been handed
    to the kernel. A close then (with the extra bytes unread) would send a reset that
    discards them; the lingering close delivers everything, then ends the stream."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(TIMEOUT)
    sock.connect((HOST, PORT))
    sock.sendall(get("/plaintext") * 300 + b"BAD\r\n\r\n")
    time.sleep(0.1)
    sock.sendall(b"more bytes after the bad request\r\n" * 100)
    time.sleep(0.3)
    shared = Shared(sock)
    for _ in range(300):
        expect(shared, 200, PLAINTEXT)
    expect(shared, 400)
    expect_closed(shared)


def head_too_large():
    many = "".join(f"X-{i}: y\r\n" for i in range(65))
    refused(get("/plaintext", extra=many), 431)
    refused(get("/plaintext", extra="X-Long: " + "y" * 9000 + "\r\n"), 431)
    # Unfinished and already over the limit: refused without waiting for its end.
    refused(b"GET /plaintext HTTP/1.1\r\nX-Long: " + b"y" * 9000, 431)


def body_too_large():
    big = b"POST /count HTTP/1.1\r\nHost: t\r\nContent-Length: 2097152\r\n\r\n"
    refused(big, 413)
    # The client keeps sending its body while the reply is on its way: the server drops
    # it and keeps the connection open until the client is done, so no reset destroys
    # the reply.
    refused(big, 413, trickle=b"z" * (1024 * 1024))
    head = b"POST /count HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
    refused(head + b"100\r\n" + b"a" * 256 + b"\r\n100001\r\n", 413)


def slowloris():
    """One header byte every 100 ms: never idle, but never complete either."""
    sock = connect()
    shared = Shared(sock)
    sock.sendall(b"GET /plaintext HTTP/1.1\r\nHost: t\r\n")
    drip = b"X-Slow: " + b"a" * 1000
    deadline = time.monotonic() + 30
    sent = 0
    while not select.select([sock], [], [], 0.1)[0]:
        assert time.monotonic() < deadline, "still open after 30 s of dripping"
        sock.send(drip[sent : sent + 1])
        sent += 1
    expect(shared, 408)
    expect_closed(shared)


MODES = {
    "pipelining": pipelining,
    "versions": versions,
    "malformed": malformed,
    "head_too_large": head_too_large,
    "body_too_large": body_too_large,
    "slowloris": slowloris,
}

MODES[sys.argv[1]]()
print("ok")
