//! `wal-bench`: the log's benchmark on a real file, for `cargo xtask bench`'s storage
//! scenarios (see `dispatch_wal::bench`). Prints one line, or one JSON object with `--json`.
//!
//! ```text
//! wal-bench --dir DIR [--callers N] [--seconds S] [--record-bytes B] [--buffered] [--json]
//! ```
#![forbid(unsafe_code)]

use dispatch_wal::bench::{run, BenchOptions};

const USAGE: &str = "usage: wal-bench --dir DIR [--callers N (1)] [--seconds S (5)] \
                     [--record-bytes B (4096)] [--buffered (no O_DIRECT)] [--json]\n\
                     DIR must be on the disk to measure (not tmpfs); the log is DIR/wal-bench.log";

fn parse() -> Result<(BenchOptions, bool), String> {
    let mut options = BenchOptions::new("", 1, 5.0);
    let (mut dir, mut json) = (None, false);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--dir" => dir = Some(value("--dir")?),
            "--callers" => options.callers = number(&value("--callers")?)?,
            "--seconds" => options.seconds = number(&value("--seconds")?)?,
            "--record-bytes" => options.record_bytes = number(&value("--record-bytes")?)?,
            "--buffered" => options.direct = false,
            "--json" => json = true,
            "--help" | "-h" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    options.dir = dir.ok_or("--dir is required")?.into();
    Ok((options, json))
}

fn number<T: std::str::FromStr>(text: &str) -> Result<T, String> {
    text.parse().map_err(|_| format!("not a number: {text:?}"))
}

fn main() {
    let (options, json) = match parse() {
        Ok(parsed) => parsed,
        Err(error) => {
            if !error.is_empty() {
                eprintln!("wal-bench: {error}");
            }
            eprintln!("{USAGE}");
            std::process::exit(2);
        }
    };
    match run(&options) {
        Ok(report) if json => println!("{}", report.json()),
        Ok(report) => println!("{report}"),
        Err(error) => {
            eprintln!("wal-bench: {error}");
            std::process::exit(1);
        }
    }
}
