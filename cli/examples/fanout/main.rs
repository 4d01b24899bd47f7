//! A foreach over `n` items and a join that sums their squares (the flow is in
//! `flow.rs`, which the tests and benches use too).
//!
//! `cargo run --release --example fanout -- run --param n=1000` stores `total` =
//! 332833500 in the join task; read it with
//! `cargo run --release --bin braid -- artifact fanout/latest/join total`.

use std::process::ExitCode;

mod flow;

fn main() -> ExitCode {
    braid_cli::flow_main(vec![flow::fanout()])
}
