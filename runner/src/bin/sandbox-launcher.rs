//! Test-only launcher for `runner::sandbox`.
//!
//! It exists only so this crate's integration tests can exercise the real re-exec path (they find
//! it through `env!("CARGO_BIN_EXE_sandbox-launcher")` and pass no launcher arguments). The agent
//! does not ship it: its own binary embeds the same entry point behind a hidden `__sandbox`
//! subcommand.

fn main() {
    // Skip only the program name: tests call `run(launcher, &[], …)`.
    runner::sandbox::child_main(std::env::args_os().skip(1).collect())
}
