//! Integration tests of the pipelines: golden replays of the samples, determinism across
//! thread counts, the same records through every format, and the `anning` binary.

mod cli;
mod daemon;
mod daemon_audit;
mod daemon_checkpoint;
mod daemon_group;
#[cfg(feature = "sql")]
mod desk;
mod determinism;
mod formats;
mod golden;
mod kafka;
mod rules_test;
mod score;
mod util;
mod workbench;
