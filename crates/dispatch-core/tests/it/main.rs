//! dispatch-core's integration suite: every operation over real sockets and files, through the
//! public API only. Each test builds its loop with `check::io`, which skips (saying why)
//! where the backend cannot run on this machine.

mod alloc;
mod cancel;
mod deadline;
mod drop_in_flight;
mod fallback;
mod misuse;
mod model;
mod ops;
mod overflow;
mod pipe;
mod pooled;
mod timeout;
mod wakeup;

/// Helpers every test module shares.
pub mod check {
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::{AsRawFd, OwnedFd, RawFd};

    use dispatch_core::{Io, Options};

    /// A loop for `options`, or `None` (after printing why) where io_uring is unavailable.
    pub fn io<C>(options: &Options) -> Option<Io<C>> {
        match Io::new(options) {
            Ok(io) => Some(io),
            #[cfg(target_os = "linux")]
            Err(dispatch_core::InitError::Unavailable(error)) => {
                eprintln!("skipped: {error}");
                None
            }
            Err(error) => panic!("Io::new: {error}"),
        }
    }

    /// Whether `io` runs on io_uring, whose submission queue and batching some tests observe
    /// through `stats()`; readiness backends have neither and perform one syscall per
    /// operation.
    pub fn on_io_uring<C>(io: &Io<C>) -> bool {
        io.stats().backend == dispatch_core::BackendKind::IoUring
    }

    /// The environment variable that tells a re-executed test binary it is the child.
    pub const CHILD_ENV: &str = "DISPATCH_CORE_TEST_CHILD";

    /// The child's role when this process was started by [`in_child`], else `None`.
    pub fn child_role() -> Option<String> {
        std::env::var(CHILD_ENV).ok()
    }

    /// Re-runs the test `test` (its full path) alone in a child process with `role` in
    /// [`CHILD_ENV`] and `DISPATCH_BACKEND` as given (removed when `None`), asserts that it
    /// passed, and returns its output. For tests that count process-wide resources, or
    /// install process-wide filters, without disturbing the tests beside them.
    pub fn in_child(test: &str, role: &str, backend: Option<&str>) -> String {
        let mut command = std::process::Command::new(std::env::current_exe().unwrap());
        command.args(["--exact", test, "--test-threads", "1", "--nocapture"]);
        command.env(CHILD_ENV, role);
        match backend {
            Some(name) => command.env(dispatch_core::BACKEND_ENV, name),
            None => command.env_remove(dispatch_core::BACKEND_ENV),
        };
        let output = command.output().unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "the child test failed:\n{stdout}\n{stderr}"
        );
        assert!(
            stdout.contains("1 passed"),
            "the child ran no test:\n{stdout}"
        );
        format!("{stdout}{stderr}")
    }

    /// A connected loopback TCP pair: (client, server side).
    pub fn tcp_pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        (client, server)
    }

    /// A new, unconnected, blocking IPv4 TCP socket.
    pub fn tcp_socket() -> OwnedFd {
        rustix::net::socket(
            rustix::net::AddressFamily::INET,
            rustix::net::SocketType::STREAM,
            None,
        )
        .unwrap()
    }

    /// Makes `stream`'s close send a reset (`SO_LINGER` 0) and closes it.
    pub fn reset(stream: TcpStream) {
        rustix::net::sockopt::set_socket_linger(&stream, Some(std::time::Duration::ZERO)).unwrap();
        drop(stream);
    }

    /// The raw descriptor of anything that has one.
    pub fn fd(value: &impl AsRawFd) -> RawFd {
        value.as_raw_fd()
    }

    /// A fresh path in the temporary directory, unique to this process and `name`.
    pub fn temp_path(name: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("dispatch-core-it-{}-{name}", std::process::id()))
    }
}
