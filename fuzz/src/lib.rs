//! The fuzz target's checks (`check`), a module of their own so that the
//! stable replay test (`tests/integration/fuzz_corpus.rs`) runs the very
//! same code without nightly or libFuzzer. The role loader comes from
//! `imagectl-core`, which has no AWS SDK and no async runtime: instrumented
//! builds stay small.

pub mod check;
