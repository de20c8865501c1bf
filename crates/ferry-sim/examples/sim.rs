//! Stand-alone `ferry sim` (same arguments), handy while the `ferry` binary is not built:
//! `cargo run --release -p ferry-sim --example sim -- run --policy fgd`.

use clap::Parser;

#[derive(Parser)]
#[command(name = "sim")]
struct Cli {
    #[command(flatten)]
    args: ferry_sim::cli::SimArgs,
}

fn main() -> anyhow::Result<()> {
    ferry_sim::cli::run(Cli::parse().args)
}
