//! What a pod asks of a node: the effective requests Kubernetes' scheduler computes.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, PodSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::RESOURCE_NVIDIA_GPU;
use crate::quantity::{self, QuantityError};

/// Why a pod's effective requests cannot be computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestsError {
    /// A request, limit or overhead is not a valid quantity.
    #[error(transparent)]
    Quantity(#[from] QuantityError),
    /// The sum over the pod's containers (and overhead) does not fit in 64 bits.
    #[error("the pod's total {resource} request is too large")]
    Overflow {
        /// `cpu`, `memory` or `nvidia.com/gpu`.
        resource: &'static str,
    },
}

/// `a + b`, or the overflow of `resource`.
fn add(a: i64, b: i64, resource: &'static str) -> Result<i64, RequestsError> {
    a.checked_add(b).ok_or(RequestsError::Overflow { resource })
}

/// The effective resource requests of a pod.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PodRequests {
    /// CPU in milli-cores.
    pub cpu_milli: i64,
    /// Memory in bytes.
    pub memory_bytes: i64,
    /// Whole NVIDIA GPUs.
    pub gpus: i64,
}

/// The requests and limits of one container, however they are held (the full k8s-openapi
/// [`Container`], or a slimmer copy such as the scheduler's informers keep).
pub trait ContainerResources {
    /// The request for `name`, if any.
    fn request(&self, name: &str) -> Option<&Quantity>;
    /// The limit for `name`, if any.
    fn limit(&self, name: &str) -> Option<&Quantity>;
}

impl ContainerResources for Container {
    fn request(&self, name: &str) -> Option<&Quantity> {
        self.resources.as_ref()?.requests.as_ref()?.get(name)
    }

    fn limit(&self, name: &str) -> Option<&Quantity> {
        self.resources.as_ref()?.limits.as_ref()?.get(name)
    }
}

/// Reads one container's requests; a resource with only a limit is requested at its limit.
fn container_requests(c: &impl ContainerResources) -> Result<PodRequests, QuantityError> {
    let pick = |name: &str| -> Option<&Quantity> { c.request(name).or_else(|| c.limit(name)) };
    Ok(PodRequests {
        cpu_milli: pick("cpu")
            .map(|q| quantity::parse_milli(&q.0))
            .transpose()?
            .unwrap_or(0),
        memory_bytes: pick("memory")
            .map(|q| quantity::parse_units(&q.0))
            .transpose()?
            .unwrap_or(0),
        gpus: pick(RESOURCE_NVIDIA_GPU)
            .map(|q| quantity::parse_integer(&q.0))
            .transpose()?
            .unwrap_or(0),
    })
}

impl PodRequests {
    /// The pod's effective requests: the sum over containers, raised to the largest init
    /// container (init containers run one at a time), plus the pod overhead. Fails on an
    /// invalid quantity or a total that overflows (the API server's validation and the
    /// scheduler refuse such a pod with this error).
    pub fn of(spec: &PodSpec) -> Result<Self, RequestsError> {
        let empty = BTreeMap::new();
        let overhead = spec.overhead.as_ref().unwrap_or(&empty);
        Self::of_containers(
            &spec.containers,
            spec.init_containers.iter().flatten(),
            |name| overhead.get(name),
        )
    }

    /// [`PodRequests::of`] for a pod held in another shape: its containers, its init
    /// containers, and its overhead by resource name.
    pub fn of_containers<'a, C: ContainerResources + 'a>(
        containers: impl IntoIterator<Item = &'a C>,
        init_containers: impl IntoIterator<Item = &'a C>,
        overhead: impl Fn(&str) -> Option<&'a Quantity>,
    ) -> Result<Self, RequestsError> {
        let mut total = PodRequests::default();
        for c in containers {
            let r = container_requests(c)?;
            total.cpu_milli = add(total.cpu_milli, r.cpu_milli, "cpu")?;
            total.memory_bytes = add(total.memory_bytes, r.memory_bytes, "memory")?;
            total.gpus = add(total.gpus, r.gpus, RESOURCE_NVIDIA_GPU)?;
        }
        for c in init_containers {
            let r = container_requests(c)?;
            total.cpu_milli = total.cpu_milli.max(r.cpu_milli);
            total.memory_bytes = total.memory_bytes.max(r.memory_bytes);
            total.gpus = total.gpus.max(r.gpus);
        }
        if let Some(q) = overhead("cpu") {
            total.cpu_milli = add(total.cpu_milli, quantity::parse_milli(&q.0)?, "cpu")?;
        }
        if let Some(q) = overhead("memory") {
            total.memory_bytes = add(total.memory_bytes, quantity::parse_units(&q.0)?, "memory")?;
        }
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ResourceRequirements;

    fn container(req: &[(&str, &str)], lim: &[(&str, &str)]) -> Container {
        let map = |kv: &[(&str, &str)]| {
            Some(
                kv.iter()
                    .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
                    .collect(),
            )
        };
        Container {
            name: "c".into(),
            resources: Some(ResourceRequirements {
                requests: map(req),
                limits: map(lim),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn sums_containers_and_takes_max_of_init() {
        let spec = PodSpec {
            containers: vec![
                container(
                    &[("cpu", "500m"), ("memory", "1Gi")],
                    &[("nvidia.com/gpu", "2")],
                ),
                container(&[("cpu", "1")], &[]),
            ],
            init_containers: Some(vec![container(&[("cpu", "4")], &[])]),
            ..Default::default()
        };
        let r = PodRequests::of(&spec).unwrap();
        assert_eq!(r.cpu_milli, 4000);
        assert_eq!(r.memory_bytes, 1 << 30);
        assert_eq!(r.gpus, 2);
    }

    #[test]
    fn overflowing_sums_are_errors() {
        let big = "9223372036854775807"; // i64::MAX bytes
        let spec = PodSpec {
            containers: vec![
                container(&[("memory", big)], &[]),
                container(&[("memory", "1")], &[]),
            ],
            ..Default::default()
        };
        assert_eq!(
            PodRequests::of(&spec),
            Err(RequestsError::Overflow { resource: "memory" })
        );
        let spec = PodSpec {
            containers: vec![container(&[("cpu", "9223372036854775")], &[])],
            overhead: Some([("cpu".to_string(), Quantity("1".into()))].into()),
            ..Default::default()
        };
        assert_eq!(
            PodRequests::of(&spec),
            Err(RequestsError::Overflow { resource: "cpu" })
        );
        let gpus = |n: &str| container(&[], &[("nvidia.com/gpu", n)]);
        let spec = PodSpec {
            containers: vec![gpus("9223372036854775"), gpus("9223372036854775")],
            ..Default::default()
        };
        assert!(PodRequests::of(&spec).is_ok());
        let spec = PodSpec {
            containers: vec![gpus("9223372036854775807"), gpus("1")],
            ..Default::default()
        };
        assert!(PodRequests::of(&spec).is_err());
    }

    #[test]
    fn rejects_fractional_gpus() {
        let spec = PodSpec {
            containers: vec![container(&[], &[("nvidia.com/gpu", "0.5")])],
            ..Default::default()
        };
        assert!(PodRequests::of(&spec).is_err());
    }
}
