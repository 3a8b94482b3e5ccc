//! Computes the `kqueue` cfg alias (targets with kqueue and `EVFILT_USER`) and registers it.

fn main() {
    println!("cargo:rustc-check-cfg=cfg(kqueue)");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if matches!(
        os.as_str(),
        "freebsd" | "dragonfly" | "macos" | "ios" | "tvos" | "watchos"
    ) {
        println!("cargo:rustc-cfg=kqueue");
    }
}
