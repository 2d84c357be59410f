//! Deterministic simulation of the replication protocol (placeholder while it is written).
