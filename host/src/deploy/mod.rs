//! The control plane: the admin API's `/v1` handlers ([`api`]) and the checking,
//! compiling and storing of an upload in a bounded child process ([`compile`]). It
//! publishes what is active through a sender the master hands it; it knows nothing
//! of the master or the workers.

pub mod api;
pub mod compile;
