//! Admission: the plugins every write passes after authorization, as kube-apiserver's
//! admission chain. Mutating plugins run before the kind's validation (LimitRange defaults);
//! validating plugins after it (Pod Security, ResourceQuota, NodeRestriction). A plugin
//! refuses a write with the Status Kubernetes gives (`403 Forbidden` for policy, such as
//! `exceeded quota` or `violates PodSecurity`; `422` for invalid objects).
//!
//! A validating plugin may hand back an [`Admitted::guard`] that the service holds until the
//! store has written the object (ResourceQuota serializes the writes it counts).

pub mod defaulttoleration;
pub mod limitrange;
pub mod noderestriction;
pub mod podsecurity;
pub mod quota;
pub mod rbac_escalation;

use std::sync::Arc;

use serde_json::Value;

use crate::auth::UserInfo;
use crate::error::ApiResult;
use crate::registry::ResourceInfo;
use crate::service::Service;

/// The kind of write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// A new object.
    Create,
    /// A replaced or patched object (its subresource in [`Attributes::subresource`]).
    Update,
    /// A deletion.
    Delete,
}

/// What is being written, for admission plugins.
#[derive(Debug, Clone, Copy)]
pub struct Attributes<'a> {
    /// The kind of write.
    pub operation: Operation,
    /// The resource.
    pub info: &'a ResourceInfo,
    /// The namespace (namespaced kinds).
    pub namespace: Option<&'a str>,
    /// The object's name.
    pub name: &'a str,
    /// The subresource written (`status`, …), if any.
    pub subresource: Option<&'a str>,
    /// The object before an update or delete.
    pub old: Option<&'a Value>,
    /// Who writes (none: the server itself, such as Event expiry).
    pub user: Option<&'a UserInfo>,
    /// A dry run (nothing is stored; quota is checked but not charged).
    pub dry_run: bool,
}

/// Held until the store has written the object.
pub type Guard = Box<dyn Send + Sync>;

/// A validating plugin's answer: warnings for the client, and what to hold during the write.
#[derive(Default)]
pub struct Admitted {
    /// `Warning` headers (Pod Security's `warn` level).
    pub warnings: Vec<String>,
    /// Held until the write is done.
    pub guards: Vec<Guard>,
}

/// An admission plugin.
#[async_trait::async_trait]
pub trait Plugin: Send + Sync {
    /// The plugin's name, as kube-apiserver's `--enable-admission-plugins` spells it.
    fn name(&self) -> &'static str;

    /// Changes the object before it is validated (defaults); returns warnings.
    fn mutate(
        &self,
        _service: &Service,
        _attributes: &Attributes<'_>,
        _object: &mut Value,
    ) -> ApiResult<Vec<String>> {
        Ok(Vec::new())
    }

    /// Accepts or refuses the validated object (for `Delete`: the object being deleted).
    async fn validate(
        &self,
        _service: &Service,
        _attributes: &Attributes<'_>,
        _object: &Value,
    ) -> ApiResult<Admitted> {
        Ok(Admitted::default())
    }
}

/// The admission chain of a server.
#[derive(Clone, Default)]
pub struct Chain {
    plugins: Vec<Arc<dyn Plugin>>,
}

impl std::fmt::Debug for Chain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.plugins.iter().map(|p| p.name()))
            .finish()
    }
}

impl Chain {
    /// The chain of every server, in kube-apiserver's order.
    pub fn standard() -> Self {
        Self::default()
            .with(Arc::new(noderestriction::NodeRestriction))
            .with(Arc::new(rbac_escalation::RbacEscalation::new()))
            .with(Arc::new(limitrange::LimitRanger))
            .with(Arc::new(defaulttoleration::DefaultTolerationSeconds))
            .with(Arc::new(podsecurity::PodSecurity))
            .with(Arc::new(quota::ResourceQuota::default()))
    }

    /// Adds a plugin at the end.
    pub fn with(mut self, plugin: Arc<dyn Plugin>) -> Self {
        self.plugins.push(plugin);
        self
    }

    /// Runs every mutating step.
    pub fn mutate(
        &self,
        service: &Service,
        attributes: &Attributes<'_>,
        object: &mut Value,
    ) -> ApiResult<Vec<String>> {
        let mut warnings = Vec::new();
        for p in &self.plugins {
            warnings.extend(p.mutate(service, attributes, object)?);
        }
        Ok(warnings)
    }

    /// Runs every validating step; the first refusal wins.
    pub async fn validate(
        &self,
        service: &Service,
        attributes: &Attributes<'_>,
        object: &Value,
    ) -> ApiResult<Admitted> {
        let mut all = Admitted::default();
        for p in &self.plugins {
            let a = p.validate(service, attributes, object).await?;
            all.warnings.extend(a.warnings);
            all.guards.extend(a.guards);
        }
        Ok(all)
    }
}
