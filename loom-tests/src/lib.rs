//! loom models of Verity's lock-free structures. Run with
//! `RUSTFLAGS="--cfg verity_loom" cargo test -p loom-tests --release`.
