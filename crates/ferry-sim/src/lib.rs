//! Trace-driven scheduling simulator over ferry-sched-core (the FGD experiment and beyond).
//!
//! - [`trace`]: reading the Alibaba `openb` CSV files.
//! - [`experiment`]: one run (shuffle by seed, tune to 1.3x capacity, place pod by pod).
//! - [`runner`]: many runs in parallel; [`curves`]: discretisation and statistics.
//! - [`output`] and [`plot`]: CSV, Markdown and SVG outputs; [`bench`]: benchmark figures.
//! - [`cli`]: the `ferry sim` command.

pub mod bench;
pub mod cli;
pub mod curves;
pub mod experiment;
pub mod output;
pub mod plot;
pub mod runner;
pub mod trace;
