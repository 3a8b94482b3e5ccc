//! dispatch-loop's integration suite: every operation over real sockets and files, through the
//! public API only. Each test builds its loop with `check::io`, which skips (saying why)
//! where the backend cannot run on this machine.

mod alike;
mod alloc;
mod cancel;
mod chaos;
mod datagram;
mod deadline;
mod drop_in_flight;
mod edge;
mod fallback;
// Linux's storage flags and io_uring's file opcodes; FreeBSD and macOS build without it.
#[cfg(target_os = "linux")]
mod files;
mod misuse;
mod model;
mod msg;
mod ops;
mod overflow;
mod pipe;
mod poll;
mod poll_alike;
mod pooled;
mod pooled_model;
mod readiness;
mod review;
mod sim;
mod sim_disk;
mod sim_fds;
mod sim_model;
mod sim_unix;
mod timeout;
mod vectored;
mod wakeup;
mod workers;

/// Helpers every test module shares.
pub mod check {
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::{AsRawFd, OwnedFd, RawFd};

    use dispatch_loop::{Io, Options};

    /// A loop for `options`, or `None` (after printing a `skipped:` line saying why) where a
    /// test asked for io_uring in its options and io_uring is unavailable. A run that forces
    /// io_uring through `DISPATCH_BACKEND` fails instead: every test would skip, and a run
    /// that tested nothing must not pass. First blocks, in this thread, the syscalls
    /// [`BLOCK_ENV`] names, and masks the kernel features [`MASK_ENV`] names; sets
    /// `file_workers` to what [`FILE_WORKERS_ENV`] says, if it is set.
    pub fn io<C>(options: &Options) -> Option<Io<C>> {
        block_from_env();
        let mut options = *options;
        if uring_extras_masked() {
            options.uring.pbuf_ring = false;
            options.uring.multishot = false;
            options.uring.ext_arg = false;
            options.uring.file_opcodes = false;
        }
        if let Some(workers) = file_workers_from_env() {
            options.file_workers = workers;
        }
        match Io::new(&options) {
            Ok(io) => Some(io),
            #[cfg(target_os = "linux")]
            Err(dispatch_loop::InitError::Unavailable(error)) => {
                let forced = std::env::var(dispatch_loop::BACKEND_ENV);
                assert!(
                    !matches!(forced.as_deref(), Ok("io_uring" | "io-uring")),
                    "{}={} but io_uring cannot run here: {error}",
                    dispatch_loop::BACKEND_ENV,
                    forced.as_deref().unwrap_or_default(),
                );
                eprintln!("skipped: {error}");
                None
            }
            Err(error) => panic!("Io::new: {error}"),
        }
    }

    /// The environment variable that sets `Options::file_workers` for every loop [`io`]
    /// builds (`0`: file operations inline on epoll and kqueue, where the default is one
    /// worker), so that the suite runs both ways.
    pub const FILE_WORKERS_ENV: &str = "DISPATCH_CORE_TEST_FILE_WORKERS";

    /// The file workers [`FILE_WORKERS_ENV`] asks for, if it is set.
    pub fn file_workers_from_env() -> Option<u32> {
        let value = std::env::var(FILE_WORKERS_ENV)
            .ok()
            .filter(|v| !v.is_empty())?;
        let workers = value.parse();
        Some(workers.unwrap_or_else(|_| panic!("{FILE_WORKERS_ENV}={value:?}: a number")))
    }

    /// The environment variable that masks kernel features the loop would otherwise use,
    /// so that the whole suite runs its fallbacks on this kernel: `uring-extras` makes the
    /// io_uring backend do without provided-buffer rings, multishot receive and accept,
    /// `EXT_ARG` wait timeouts and the optional file opcodes (run in the loop's thread), as
    /// on kernels before 5.19 (before 5.11 for `EXT_ARG`, 5.1 for the file opcodes).
    pub const MASK_ENV: &str = "DISPATCH_CORE_TEST_MASK";

    /// Whether [`MASK_ENV`] masks io_uring's extras; any other value is a mistake.
    pub fn uring_extras_masked() -> bool {
        match std::env::var(MASK_ENV).as_deref() {
            Err(_) | Ok("") => false,
            Ok("uring-extras") => true,
            Ok(other) => panic!("{MASK_ENV}={other:?}: the one mask is uring-extras"),
        }
    }

    /// The environment variable that makes [`io`] block syscalls before it builds a loop, so
    /// that the whole suite runs as on an older kernel. `epoll_pwait2` makes that syscall
    /// fail with ENOSYS, as before Linux 5.11: epoll then waits with the millisecond
    /// `epoll_wait` (`DISPATCH_BACKEND=epoll DISPATCH_CORE_TEST_BLOCK=epoll_pwait2`).
    pub const BLOCK_ENV: &str = "DISPATCH_CORE_TEST_BLOCK";

    /// Blocks the syscalls [`BLOCK_ENV`] names in this thread, once. A seccomp filter
    /// installed without `TSYNC` covers only the calling thread (and threads and processes it
    /// starts later), and the test harness runs each test on a thread of its own, so each
    /// test's thread installs it the first time it builds a loop.
    // Elsewhere than Linux every name panics, so the loop never loops.
    #[cfg_attr(not(target_os = "linux"), allow(clippy::never_loop))]
    fn block_from_env() {
        thread_local! {
            static BLOCKED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
        }
        let Ok(names) = std::env::var(BLOCK_ENV) else {
            return;
        };
        if BLOCKED.get() {
            return;
        }
        for name in names.split(',') {
            match name {
                #[cfg(target_os = "linux")]
                "epoll_pwait2" => deny_with_enosys(libc::SYS_epoll_pwait2),
                _ => panic!("{BLOCK_ENV}={names}: {name:?} names no syscall this suite can block"),
            }
        }
        BLOCKED.set(true);
        assert!(BLOCKED.get());
    }

    /// Makes the syscall `nr` fail with ENOSYS in this thread, and in the threads and
    /// processes it starts afterwards, as a kernel without it would.
    #[cfg(target_os = "linux")]
    pub fn deny_with_enosys(nr: libc::c_long) {
        use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, TargetArch};
        assert!(nr >= 0, "a syscall number");
        let arch =
            TargetArch::try_from(std::env::consts::ARCH).expect("a seccompiler architecture");
        let rules = std::collections::BTreeMap::from([(nr, vec![])]);
        let filter = SeccompFilter::new(
            rules,
            SeccompAction::Allow,
            SeccompAction::Errno(libc::ENOSYS as u32),
            arch,
        )
        .unwrap();
        let program: BpfProgram = filter.try_into().unwrap();
        seccompiler::apply_filter(&program).unwrap();
    }

    /// Whether `io` runs on io_uring, whose submission queue and batching some tests observe
    /// through `stats()`; readiness backends have neither and perform one syscall per
    /// operation.
    pub fn on_io_uring<C>(io: &Io<C>) -> bool {
        io.stats().backend == dispatch_loop::BackendKind::IoUring
    }

    /// Loops with a pool of `buffers` × `buffer_size`, 16 slots: the backend under test, and
    /// on io_uring one more per `(pbuf_ring, multishot)` of `uring` after the first (the
    /// first is the backend as configured); a backend that cannot run here gives none.
    pub fn pool_loops<C>(buffers: u32, buffer_size: u32, uring: &[(bool, bool)]) -> Vec<Io<C>> {
        let mut loops = Vec::new();
        for &(pbuf_ring, multishot) in uring {
            let mut options = Options::new(16);
            options.pool = dispatch_loop::PoolOptions::new(buffers, buffer_size);
            options.uring.pbuf_ring = pbuf_ring;
            options.uring.multishot = multishot;
            let Some(io) = io::<C>(&options) else {
                return loops;
            };
            let on_uring = on_io_uring(&io);
            loops.push(io);
            if !on_uring {
                break;
            }
        }
        loops
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
            Some(name) => command.env(dispatch_loop::BACKEND_ENV, name),
            None => command.env_remove(dispatch_loop::BACKEND_ENV),
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

    /// The lines of a child's `output` in which the loop complains (a `dispatch-loop:` line:
    /// a failed cancel, a leak on drop, ...). The one notice that is not a complaint, that
    /// the kernel refused some io_uring set-up flags (an older kernel), is left out.
    pub fn loop_complaints(output: &str) -> Vec<&str> {
        output
            .lines()
            .filter(|line| line.contains("dispatch-loop:"))
            .filter(|line| !line.contains("refuses io_uring set-up flag"))
            .collect()
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
        std::env::temp_dir().join(format!("dispatch-loop-it-{}-{name}", std::process::id()))
    }
}
