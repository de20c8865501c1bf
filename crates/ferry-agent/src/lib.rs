//! Ferry's node agent: GPU discovery, node registration, heartbeats, and pods run as host processes.

pub mod error;
pub mod gpu;
pub mod logs;
pub mod mounts;
pub mod procfs;
pub mod runtime;
pub mod shim;

pub use error::AgentError;
