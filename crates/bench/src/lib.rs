//! The part of `rbk-bench` that `cargo bench -p rbk-bench` shares with the
//! binary: the container start-overhead measurement.

pub mod start_overhead;
