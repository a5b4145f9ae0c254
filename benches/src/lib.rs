//! Benchmarks for the atrest crates. Run them with
//! `cargo bench -p atrest-benches`; see the workspace README for the reports.
