//! The `ferry` binary's library: the subcommands, and the embedded control plane that
//! `ferry up` runs (also started in-process by integration tests).

pub mod bench;
pub mod bench_scheduler;
pub mod commands;
pub mod runtimeclass;
pub mod up;
