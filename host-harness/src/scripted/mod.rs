//! Layer 3 of 3: the model driven from a script on the virtual clock, for tests
//! (`scenario.rs`: one stream or connection step by step) and for fuzzing (`fuzzing.rs`:
//! random inputs against invariants). Imports the host and model layers, never `live`.

pub mod fuzzing;
mod scenario;

pub use scenario::{body_of, ConnectionScenario, Scenario};
