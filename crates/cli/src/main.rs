//! The `adesync` binary; everything lives in the library (`adesync_cli::app`).

fn main() -> std::process::ExitCode {
    adesync_cli::app::main()
}
