//! Replay of history through the streaming scorer, and the accuracy report.

pub mod metrics;
