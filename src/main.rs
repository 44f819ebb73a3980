//! The `pinwheel` binary.
fn main() {}
