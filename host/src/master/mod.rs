//! The master process: [`supervisor`] binds the listener, runs and replaces the
//! worker processes and carries out the signal table; [`admin`] is its admin listener
//! (probes, metrics, the doctor, and the deploy API of [`crate::deploy`]).

pub mod admin;
pub mod supervisor;

pub use supervisor::run;
