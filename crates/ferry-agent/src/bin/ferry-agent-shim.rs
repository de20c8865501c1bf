//! The container supervisor as a standalone binary (used by this crate's tests; the `ferry`
//! binary runs the same code as its hidden `agent-shim` subcommand).

fn main() {
    std::process::exit(ferry_agent::shim::main_from_env());
}
