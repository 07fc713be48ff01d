//! Everything in Anning that touches the outside world: file sources and decoders, the
//! sharded multi-threaded runtime, sinks, and the `anning` command line.
//!
//! # Layout
//! - [`decode`]: JSON Lines, CSV and Parquet → records; rejects with reasons and positions.
//! - [`source`]: reading inputs in order.
//! - [`runtime`]: router + shard workers over crossbeam channels; deterministic merge.
//! - [`rules_test`]: `anning rules test`, rule tests beside a pack.
//! - [`summary`]: the replay summary on stderr.
//! - [`score`]: actions against the generator's truth (`anning score`).
//! - [`synth_out`]: generated traffic as Parquet (`anning gen --out x.parquet`).
//! - [`workbench`]: `anning tune` and `anning diff`.
//! - [`daemon`]: `anning daemon` on Kafka, with its admin HTTP endpoint and metrics.
//! - [`cli`]: the `anning` commands.

pub mod audit;
pub mod checkpoint;
pub mod cli;
pub mod daemon;
pub mod decode;
pub mod explain;
pub mod rules_test;
pub mod runtime;
pub mod score;
pub mod source;
#[cfg(feature = "sql")]
pub mod sql;
pub mod summary;
pub mod synth_out;
pub mod workbench;
