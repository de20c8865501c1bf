//! The `ferry` binary's library: the subcommands, and the embedded control plane that
//! `ferry up` runs (also started in-process by integration tests).

pub mod bench;
pub mod bench_controllers;
pub mod bench_dns;
pub mod bench_sandbox;
pub mod bench_scheduler;
pub mod bench_service;
pub mod bench_training;
pub mod cli;
pub mod commands;
pub mod incluster;
pub mod runtimeclass;
pub mod tenant;
pub mod up;
