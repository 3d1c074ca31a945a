//! Wasmtime, and nothing of the processes around it: the engine and its epoch ticker
//! ([`engine`]), loading and classifying a component ([`component`]), what one
//! request's store holds and the limits on it ([`sandbox`]), the guest's stdout and
//! stderr ([`guest_output`]), where its outbound requests may go ([`outbound`]),
//! why a guest run ended ([`error`]), and Cranelift's function cache on disk
//! ([`compile_cache`]).

pub mod compile_cache;
pub mod component;
pub mod engine;
pub mod error;
pub mod guest_output;
pub mod outbound;
pub mod sandbox;
