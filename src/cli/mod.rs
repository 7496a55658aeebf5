//! Commands.
pub mod queue;
