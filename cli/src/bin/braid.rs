//! The `braid` command: see `braid --help`.

fn main() -> std::process::ExitCode {
    braid_cli::inspect::main()
}
