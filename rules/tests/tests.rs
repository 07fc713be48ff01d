//! Integration tests of the rule language: the shipped pack compiles, broken packs give
//! exact `file:line:col` diagnostics.

mod broken_packs;
mod default_pack;
mod readme;
