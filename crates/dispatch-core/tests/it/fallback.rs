//! Backend selection: io_uring blocked by a seccomp filter (EPERM, as Docker's default profile
//! does, and ENOSYS, as gVisor and some filters do) makes automatic selection fall back to
//! epoll, say why, and still echo data; forcing an unusable backend is a clear error.
//!
//! Filters and environment variables are process-wide, so each case re-runs itself alone in
//! a child process (`check::in_child`).
#![cfg(target_os = "linux")]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;

use dispatch_loop::{
    BackendKind, BufResult, InitError, Io, Options, PoolOptions, Tag, UringFeatures,
};
use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, TargetArch};

use crate::check;

/// Makes `io_uring_setup` fail with `errno` in this thread (and its future children).
fn deny_io_uring_setup(errno: i32) {
    let arch = TargetArch::try_from(std::env::consts::ARCH).expect("a seccompiler architecture");
    let rules = BTreeMap::from([(libc::SYS_io_uring_setup, vec![])]);
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(errno as u32),
        arch,
    )
    .unwrap();
    let program: BpfProgram = filter.try_into().unwrap();
    seccompiler::apply_filter(&program).unwrap();
}

#[derive(Default)]
struct Echo {
    received: Vec<u8>,
}

fn on_recv(echo: &mut Echo, _: &mut Io<Echo>, _: Tag, (result, buf): BufResult) {
    assert_eq!(result.unwrap(), buf.len());
    echo.received = buf;
}

fn on_send(_: &mut Echo, _: &mut Io<Echo>, _: Tag, (result, buf): BufResult) {
    assert_eq!(result.unwrap(), buf.len());
}

/// In the child: with io_uring_setup denied, auto selection runs on epoll and echoes.
fn falls_back_and_echoes(errno: i32) {
    deny_io_uring_setup(errno);
    let mut io = Io::<Echo>::new(&Options::new(8)).expect("the fallback works");
    let stats = io.stats();
    assert_eq!(stats.backend, BackendKind::Epoll);
    let fallback = stats.fallback.expect("the fallback is recorded");
    assert_eq!(fallback.from, BackendKind::IoUring);
    assert_eq!(fallback.errno, Some(errno));
    println!("fell back: {fallback}");
    // Echo through the loop: the server side receives what the client sent and sends it back.
    let (mut client, server) = check::tcp_pair();
    client.write_all(b"still echoing").unwrap();
    io.recv(1, server.as_raw_fd(), Vec::with_capacity(64), on_recv)
        .unwrap();
    let mut echo = Echo::default();
    io.run_until_idle(&mut echo).unwrap();
    io.send(2, server.as_raw_fd(), echo.received.clone(), on_send)
        .unwrap();
    io.run_until_idle(&mut echo).unwrap();
    let mut back = [0_u8; 13];
    client.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"still echoing");
    // Forcing io_uring under the same filter is an error that says why, not a fallback.
    let mut forced = Options::new(8);
    forced.backend = Some(BackendKind::IoUring);
    let error = Io::<Echo>::new(&forced).unwrap_err();
    assert!(matches!(error, InitError::Unavailable(_)), "{error}");
    println!("forced: {error}");
}

#[test]
fn seccomp_eperm_falls_back_to_epoll() {
    if check::child_role().is_some() {
        return falls_back_and_echoes(libc::EPERM);
    }
    let output = check::in_child("fallback::seccomp_eperm_falls_back_to_epoll", "eperm", None);
    assert!(
        output.contains("fell back: io_uring unavailable: blocked by seccomp"),
        "{output}"
    );
    assert!(
        output.contains("falling back to epoll"),
        "logged once: {output}"
    );
    assert!(output.contains("seccomp"), "{output}");
}

#[test]
fn seccomp_enosys_falls_back_to_epoll() {
    if check::child_role().is_some() {
        return falls_back_and_echoes(libc::ENOSYS);
    }
    let output = check::in_child(
        "fallback::seccomp_enosys_falls_back_to_epoll",
        "enosys",
        None,
    );
    assert!(
        output.contains("fell back: io_uring unavailable: not implemented"),
        "{output}"
    );
}

#[test]
fn a_forced_backend_that_does_not_exist_here_is_an_error() {
    let mut options = Options::new(8);
    options.backend = Some(BackendKind::Kqueue);
    let error = Io::<()>::new(&options).unwrap_err();
    assert!(matches!(
        error,
        InitError::UnsupportedBackend(BackendKind::Kqueue)
    ));
    assert!(error.to_string().contains("kqueue-fake"), "{error}");
}

#[test]
fn the_environment_variable_forces_a_backend_and_rejects_unknown_names() {
    match check::child_role().as_deref() {
        Some("env-epoll") => {
            let io = Io::<()>::new(&Options::new(8)).unwrap();
            assert_eq!(io.stats().backend, BackendKind::Epoll);
            assert_eq!(io.stats().fallback, None, "forced, not fallen back");
            return;
        }
        Some("env-bogus") => {
            let error = Io::<()>::new(&Options::new(8)).unwrap_err();
            assert!(matches!(error, InitError::UnknownBackend(ref name) if name == "bogus"));
            println!("{error}");
            return;
        }
        Some(other) => panic!("unknown role {other}"),
        None => {}
    }
    let test = "fallback::the_environment_variable_forces_a_backend_and_rejects_unknown_names";
    check::in_child(test, "env-epoll", Some("epoll"));
    let output = check::in_child(test, "env-bogus", Some("bogus"));
    assert!(output.contains("names no backend"), "{output}");
    // Options win over the environment.
    let mut options = Options::new(8);
    options.backend = Some(BackendKind::KqueueFake);
    let io = Io::<()>::new(&options).unwrap();
    assert_eq!(io.stats().backend, BackendKind::KqueueFake);
}

/// `Stats::uring` says what io_uring uses on this kernel: every set-up flag asked for is
/// either in use or reported as stepped down, nothing not asked for is used, and the other
/// backends report `None`.
#[test]
fn stats_say_what_io_uring_uses_of_what_was_asked() {
    let mut options = Options::new(8);
    options.pool = PoolOptions::new(4, 64);
    let Some(io) = check::io::<()>(&options) else {
        return;
    };
    let stats = io.stats();
    let Some(uring) = stats.uring else {
        assert_ne!(stats.backend, BackendKind::IoUring);
        return;
    };
    assert_eq!(stats.backend, BackendKind::IoUring);
    let asked = [
        (
            uring.defer_taskrun,
            UringFeatures::STEPPED_DOWN_DEFER_TASKRUN,
        ),
        (
            uring.single_issuer,
            UringFeatures::STEPPED_DOWN_SINGLE_ISSUER,
        ),
        (uring.submit_all, UringFeatures::STEPPED_DOWN_SUBMIT_ALL),
    ];
    for (used, bit) in asked {
        assert_ne!(
            used,
            uring.stepped_down & bit != 0,
            "flag {bit}: used or given up"
        );
    }
    assert!(!uring.coop_taskrun, "not asked for");
    assert!(!uring.min_timeout, "no batch wait asked for");
    if check::uring_extras_masked() {
        assert!(
            !uring.pbuf_ring && !uring.multishot && !uring.ext_arg,
            "masked"
        );
    }
    drop(io);
    options.uring.single_issuer = false;
    options.uring.defer_taskrun = false;
    options.uring.submit_all = false;
    options.pool.buffers = 0;
    let io = check::io::<()>(&options).expect("io_uring ran a moment ago");
    let plain = io.stats().uring.expect("io_uring still");
    assert!(!plain.single_issuer && !plain.defer_taskrun && !plain.submit_all);
    assert_eq!(plain.stepped_down, 0, "a plain ring needs nothing given up");
    assert!(!plain.pbuf_ring, "no pool, no buffer ring");
}
