//! The control plane: the admin API's `/v1` handlers ([`api`]) with their answers
//! ([`reply`]) and uploads ([`upload`]); the checking, compiling and storing of an
//! upload in a bounded child process ([`compile`]); a deploy's steps as it goes
//! ([`progress`]); and publishing what is active through a sender the master hands
//! over ([`context`]). It knows nothing of the
//! master or the workers.

pub mod api;
pub mod compile;
pub mod context;
pub mod progress;
pub mod queue;
pub mod reply;
pub mod upload;
