//! Benchmark helpers for `bench/run.sh`: `native-hello`, the ceiling a WebAssembly
//! host is compared against, and `instantiate`, the per-request cost of a fresh store
//! and instance.
