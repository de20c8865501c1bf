//! The `ferry` command: one binary for every Ferry component.

use clap::{Parser, Subcommand};

use ferry::commands;

/// Ferry: run training and inference on shared GPUs, on Kubernetes or on one machine.
#[derive(Debug, Parser)]
#[command(name = "ferry", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run only Ferry's Kubernetes-compatible API server (the embedded control plane's store).
    Apiserver(commands::ApiserverArgs),
    /// Replay a GPU-cluster trace under a placement policy (the FGD experiment).
    Sim(ferry_sim::cli::SimArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Apiserver(args) => commands::run_async(commands::apiserver(args)),
        Command::Sim(args) => ferry_sim::cli::run(args),
    }
}
