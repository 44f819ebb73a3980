//! Top-level error (placeholder).
