//! Integration tests of the detector: windows against naive models, and the engine on
//! threshold dodgers and greeting rounds.

mod dodgers;
mod reload;
mod support;
mod window_models;
