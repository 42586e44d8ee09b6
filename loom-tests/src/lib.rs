//! loom models of Verity's lock-free structures. Run with
//! `RUSTFLAGS="--cfg loom" cargo test -p loom-tests --release`.
