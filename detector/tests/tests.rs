//! Integration tests of the detector: windows against naive models, and the engine on
//! threshold dodgers and greeting rounds, cold keys against warm ones, routes made once
//! against routing in every shard.

mod cold_keys;
mod dodgers;
mod fingerprint;
mod reload;
mod routes;
mod support;
mod window_models;
