//! Names, annotation formats and request arithmetic shared by every Ferry component.
//!
//! Everything Ferry writes onto standard Kubernetes objects (labels, annotations, extended
//! resources) is defined here once, so the node agent, the scheduler, the controllers and the
//! CLI agree on it. Ferry's own kinds live under the [`GROUP`] API group.

pub mod cron;
pub mod gpu;
pub mod network;
pub mod node_selector;
pub mod quantity;
pub mod quota;
pub mod requests;
pub mod scheduling;
pub mod stats;
pub mod xid;

/// Ferry's own API group (for labels, annotations and custom resources).
pub const GROUP: &str = "ferry.dev";

/// The `schedulerName` Ferry's scheduler answers to.
pub const SCHEDULER_NAME: &str = "ferry-scheduler";

/// The scheduler name Kubernetes gives pods that name none; Ferry's embedded mode serves it too.
pub const DEFAULT_SCHEDULER_NAME: &str = "default-scheduler";

/// Extended resource name of whole NVIDIA GPUs (as the NVIDIA device plugin names it).
pub const RESOURCE_NVIDIA_GPU: &str = "nvidia.com/gpu";

/// Namespace where node heartbeat Leases live (as in Kubernetes).
pub const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";
