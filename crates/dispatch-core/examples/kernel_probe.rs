//! What this kernel's io_uring offers the loop, and what the loop picks: one `KM|key=value`
//! line per fact, for `cargo xtask kernel-test`, which runs it first in each kernel's VM and
//! turns the lines into its table and `docs/KERNELS.md`. Also runnable by hand:
//! `cargo run -p dispatch-loop --example kernel_probe`.
//!
//! The set-up flags and features come from `sys_uring::probe`; provided-buffer rings and
//! multishot receive are asked the way the io_uring backend asks them (a registration, a
//! multishot receive from a group that does not exist); the loop's lines come from `Io::new`
//! itself, automatic and forced, so a refusal shows here with the loop's own words.

#[cfg(target_os = "linux")]
fn main() {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    line("kernel", release.trim());
    let memlock = rustix::process::getrlimit(rustix::process::Resource::Memlock);
    let memlock = memlock
        .current
        .map_or("unlimited".to_owned(), |n| n.to_string());
    line("rlimit.memlock", &memlock);
    match sys_uring::probe() {
        Ok(probe) => ring_lines(&probe),
        Err(error) => line("io_uring", &format!("unavailable: {error}")),
    }
    loop_lines();
}

#[cfg(not(target_os = "linux"))]
fn main() {
    println!("KM|io_uring=not Linux");
}

#[cfg(target_os = "linux")]
fn line(key: &str, value: &str) {
    println!("KM|{key}={value}");
}

#[cfg(target_os = "linux")]
fn yes(value: bool) -> &'static str {
    if value {
        "yes"
    } else {
        "no"
    }
}

/// The set-up flags, features and opcodes the loop can use.
#[cfg(target_os = "linux")]
fn ring_lines(probe: &sys_uring::Probe) {
    line("io_uring", "ok");
    line("setup.single_issuer", yes(probe.single_issuer));
    line("setup.defer_taskrun", yes(probe.defer_taskrun));
    line("setup.coop_taskrun", yes(probe.coop_taskrun));
    line("setup.submit_all", yes(probe.submit_all));
    line("feat.ext_arg", yes(probe.ext_arg));
    line("feat.nodrop", yes(probe.nodrop));
    let supported = (0..=u8::MAX).filter(|&code| probe.supports(code)).count();
    line("opcodes.supported", &supported.to_string());
    let missing: Vec<&str> = sys_uring::REQUIRED_OPCODES
        .iter()
        .filter(|(code, _)| !probe.supports(*code))
        .map(|(_, name)| *name)
        .collect();
    line("opcodes.loop_missing", &missing.join(","));
    let Ok(mut ring) = sys_uring::Ring::new(&sys_uring::RingOptions::new(8)) else {
        return line("ring", "a plain ring of 8 failed after the probe");
    };
    line("feat.min_timeout", yes(ring.has_min_timeout()));
    let multishot = match ring.probe_recv_multishot() {
        Ok(has) => yes(has).to_owned(),
        Err(error) => format!("error: {error}"),
    };
    line("multishot_recv", &multishot);
    let pbuf_ring = match sys_uring::BufRing::new(8) {
        Ok(buf_ring) => match ring.register_buf_ring(buf_ring, 0) {
            Ok(()) => "yes".to_owned(),
            Err(error) => format!("no ({error})"),
        },
        Err(error) => format!("no (allocating: {error})"),
    };
    line("pbuf_ring", &pbuf_ring);
}

/// What `Io::new` picks on its own with everything asked for (a pool, a batch wait), and
/// what it uses there (`Stats::uring`: the features after stepping down to the kernel's);
/// then whether the default options run on forced io_uring.
#[cfg(target_os = "linux")]
fn loop_lines() {
    use dispatch_loop::{BackendKind, Io, Options, PoolOptions};

    let mut options = Options::new(64);
    options.backend = None;
    options.pool = PoolOptions::new(16, 4096);
    options.uring.batch_events = 16;
    options.uring.batch_wait_us = 50;
    match Io::<()>::new(&options) {
        Ok(io) => {
            let stats = io.stats();
            line("loop.auto", stats.backend.name());
            let fallback = stats.fallback.map(|f| f.to_string()).unwrap_or_default();
            line("loop.auto_fallback", &fallback);
            if let Some(uring) = stats.uring {
                uring_lines(&uring);
            }
            line("loop.batch_wait_us", &stats.batch_wait_us.to_string());
        }
        Err(error) => line("loop.auto", &format!("error: {error}")),
    }
    let mut forced = Options::new(64);
    forced.backend = Some(BackendKind::IoUring);
    let forced = match Io::<()>::new(&forced) {
        Ok(_) => "ok".to_owned(),
        Err(error) => format!("error: {error}"),
    };
    line("loop.io_uring", &forced);
}

/// What the io_uring backend uses, from `Stats::uring`.
#[cfg(target_os = "linux")]
fn uring_lines(uring: &dispatch_loop::UringFeatures) {
    line("loop.uses.single_issuer", yes(uring.single_issuer));
    line("loop.uses.defer_taskrun", yes(uring.defer_taskrun));
    line("loop.uses.coop_taskrun", yes(uring.coop_taskrun));
    line("loop.uses.submit_all", yes(uring.submit_all));
    line("loop.uses.ext_arg", yes(uring.ext_arg));
    line("loop.uses.pbuf_ring", yes(uring.pbuf_ring));
    line("loop.uses.multishot", yes(uring.multishot));
    line("loop.uses.min_timeout", yes(uring.min_timeout));
    let stepped: Vec<&str> = uring.stepped_down_names().collect();
    line("loop.stepped_down", &stepped.join(","));
}
