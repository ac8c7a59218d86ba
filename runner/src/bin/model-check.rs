//! Test-only entry point for `runner::model_check`.
//!
//! It exists only so this crate's integration tests can run the real child (they find it
//! through `env!("CARGO_BIN_EXE_model-check")` and pass no arguments before the model). The
//! server does not ship it: its own binary embeds the same entry point behind a hidden
//! `__check-model` subcommand.

fn main() {
    runner::model_check::child_main(std::env::args_os().skip(1).collect())
}
