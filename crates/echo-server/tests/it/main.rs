//! echo-server's integration suite: the real binary over real sockets, black-box.
//!
//! Every test starts the built `echo-server` on `127.0.0.1:0` through `check::start`, which
//! reads the `listening on IP:PORT` line, checks the backend each thread logs, and stops the
//! server with SIGTERM when dropped. Behaviour tests run once per backend configuration
//! (`every_backend!`): io_uring, io_uring with every extra masked (`--uring-mask`), epoll, and
//! the kqueue logic over its fake (`DISPATCH_BACKEND=kqueue-fake --backend auto`). io_uring
//! tests skip, saying why, where the server itself falls back from io_uring on this host.
//! Every wait has a deadline and every loop a bound; the only timing assertions are generous
//! "within N seconds" limits.

#![forbid(unsafe_code)]

/// One test module per behaviour: `$name(backend)` becomes `$name::io_uring`,
/// `$name::io_uring_masked`, `$name::epoll` and `$name::kqueue_fake`.
macro_rules! every_backend {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                use crate::check::Backend;

                #[test]
                fn io_uring() {
                    super::$name(Backend::IoUring)
                }

                #[test]
                fn io_uring_masked() {
                    super::$name(Backend::IoUringMasked)
                }

                #[test]
                fn epoll() {
                    super::$name(Backend::Epoll)
                }

                #[test]
                fn kqueue_fake() {
                    super::$name(Backend::KqueueFake)
                }
            }
        )*
    };
}

mod check;
mod echo;
mod hostile;
mod lifecycle;
mod limits;
mod sim_fuzz;
mod udp;
