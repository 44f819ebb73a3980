//! Placement plan (placeholder).
