//! The P/E classification ladder (placeholder until detection lands).
