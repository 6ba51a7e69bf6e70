//! Accuracy metrics (filled in by the metrics work).
