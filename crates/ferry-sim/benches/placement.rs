//! `cargo bench -p ferry-sim`: prints the benchmark figures.

fn main() {}
