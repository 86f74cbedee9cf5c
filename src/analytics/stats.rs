//! Experiment statistics (pure).
