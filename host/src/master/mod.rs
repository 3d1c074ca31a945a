//! The master process: [`listeners`] binds the public sockets, [`supervisor`] runs
//! and replaces the worker processes that share them and carries out the signal
//! table; [`admin`] is its admin listener
//! (probes, metrics, the doctor, and the deploy API of [`crate::deploy`]).

pub mod admin;
pub mod listeners;
pub mod reload;
pub mod supervisor;

pub use supervisor::run;
