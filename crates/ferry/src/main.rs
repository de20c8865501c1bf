//! The `ferry` command: one binary for every Ferry component.

use clap::{Parser, Subcommand};

/// Ferry: run training and inference on shared GPUs, on Kubernetes or on one machine.
#[derive(Debug, Parser)]
#[command(name = "ferry", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Replay a GPU-cluster trace under a placement policy (the FGD experiment).
    Sim(ferry_sim::cli::SimArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Sim(args) => ferry_sim::cli::run(args),
    }
}
