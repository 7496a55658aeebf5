//! The development gateway (stub).
