//! Anning's detector: the pure, deterministic engine. Records in (decoded and enriched),
//! actions out; time is the records' event time and the watermark handed in. No I/O, no
//! threads, no clocks — replay and the daemon run this same code.
//!
//! # Layout
//! - [`record`]: the record model, one buffer per record; signature extraction; timestamps.
//! - [`registry`]: the port registry.
//! - [`window`]: event-time sliding counts and distinct counts over bins.
//! - [`near_limit`]: the "198 of 200" chain evaluator.
//! - [`escalation`]: per-(target, rule) ladders with decay; the action a target is under.
//! - [`action`]: actions per the contract, deterministic ids.
//! - [`engine`]: one shard's keyed state and rule evaluation; eviction of idle keys.
//! - [`join`]: delivery reports joined to their messages, replies to their port's signature.
//! - [`watermark`]: the watermark and the late-record policy.
//! - [`mask`]: masking subscriber numbers for logs and reports.

pub mod action;
pub mod engine;
pub mod escalation;
mod filter;
pub mod join;
pub mod mask;
pub mod near_limit;
pub mod record;
pub mod registry;
pub mod stamp;
pub mod watermark;
pub mod window;

pub use action::Action;
pub use engine::{Allowed, Engine, EngineStats, Reloaded};
pub use join::Joiner;
pub use record::{Enricher, Record, RecordBuilder, Slot};
pub use registry::Registry;
pub use stamp::{Stamped, Stamper};
pub use watermark::{Verdict, Watermark};
