//! Trace-driven scheduling simulator over ferry-sched-core (the FGD experiment and beyond).

pub mod cli {
    //! The `ferry sim` command.

    /// Arguments of `ferry sim`.
    #[derive(Debug, clap::Args)]
    pub struct SimArgs {}

    /// Runs `ferry sim`.
    pub fn run(_args: SimArgs) -> anyhow::Result<()> {
        anyhow::bail!("ferry sim is not built yet")
    }
}
