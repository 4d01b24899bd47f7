//! The command line of cli's benches: `--quick`, `--json-out FILE` (from `cargo xtask
//! bench`), `--max-workers N`, and `--child KIND N STORE` for the child process a bench
//! measures. Shared through `#[path]`, like `rows.rs`.
#![allow(dead_code)] // Each includer uses a part.

use std::path::PathBuf;

/// What a bench was asked to do.
pub struct Args {
    pub quick: bool,
    pub json_out: Option<PathBuf>,
    pub max_workers: usize,
    /// `--child KIND N STORE`: be the child process that does one measured thing.
    pub child: Option<(String, u64, PathBuf)>,
}

/// Parses the process's arguments; anything else (`cargo bench` passes `--bench`) is ignored.
pub fn args() -> Args {
    let mut a = Args {
        quick: false,
        json_out: None,
        max_workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
        child: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--quick" => a.quick = true,
            "--json-out" => a.json_out = Some(it.next().expect("--json-out FILE").into()),
            "--max-workers" => a.max_workers = it.next().expect("--max-workers N").parse().expect("a number"),
            "--child" => {
                let kind = it.next().expect("--child KIND N STORE");
                let n = it.next().expect("--child KIND N STORE").parse().expect("a number");
                a.child = Some((kind, n, it.next().expect("--child KIND N STORE").into()));
            }
            _ => {}
        }
    }
    a
}
