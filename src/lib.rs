//! gemma-fit: hardware-fit benchmarking and profiling for Google's Gemma 3 models.
//! The map of the modules and the rule of who may use whom: `docs/ARCHITECTURE.md`.

pub mod cli;
pub mod commands;
pub mod engine;
pub mod error;
pub mod estimate;
pub mod fuzz;
pub mod gate;
pub mod measure;
pub mod output;
pub mod probe;
pub mod quality;
pub mod report;
pub mod result;
pub mod stats;
pub mod suite;
pub mod units;

pub use error::{Error, Result};
