//! Starts a throwaway PostgreSQL and S3 server (moto) on 127.0.0.1, prints the two
//! locations and the environment that points braid at them, and keeps them up until
//! this program is stopped (Ctrl-C, or its input closed): then both stop and their
//! temp directories go. Run it through `cargo xtask dev-servers`.

use std::io::BufRead;

fn main() -> std::process::ExitCode {
    let Some(pg) = braid_store::test_servers::postgres() else {
        return std::process::ExitCode::FAILURE;
    };
    let Some(s3) = braid_store::test_servers::s3() else {
        return std::process::ExitCode::FAILURE;
    };
    let db = pg.fresh_database();
    s3.create_bucket("braid");
    println!("# Throwaway PostgreSQL and S3 servers are up. In another shell:");
    println!("export BRAID_STORE='{db}'");
    println!("export BRAID_BLOBS='s3://braid/runs'");
    for (k, v) in s3.env() {
        println!("export {k}='{v}'");
    }
    println!("# Stop them with Ctrl-C (or close this program's input).");
    // Wait for the input to close; Ctrl-C ends the process, and the servers' watchdogs
    // stop them as soon as it is gone.
    for line in std::io::stdin().lock().lines() {
        if line.is_err() {
            break;
        }
    }
    std::process::ExitCode::SUCCESS
}
