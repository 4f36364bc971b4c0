//! `stowage`: see `stowage --help`.

fn main() -> std::process::ExitCode {
    stowage_runner::process::main()
}
