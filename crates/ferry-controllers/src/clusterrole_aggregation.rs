//! ClusterRole aggregation, as kube-controller-manager's clusterrole-aggregation controller:
//! the `rules` of a ClusterRole with an `aggregationRule` are the rules of every other
//! ClusterRole its `clusterRoleSelectors` match (in name order, without duplicates). Any change
//! of any ClusterRole reconciles every aggregated one, from the watched state.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule};
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::core::{Selector, SelectorExt};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;

use crate::Error;

struct Context {
    client: kube::Client,
}

/// The rules `role` aggregates from `all` (none when it has no `aggregationRule`).
pub fn aggregated_rules(role: &ClusterRole, all: &[Arc<ClusterRole>]) -> Option<Vec<PolicyRule>> {
    let selectors = role
        .aggregation_rule
        .as_ref()?
        .cluster_role_selectors
        .as_ref();
    let mut sorted: Vec<&Arc<ClusterRole>> = all.iter().collect();
    sorted.sort_by_key(|r| r.name_any());
    let mut rules: Vec<PolicyRule> = Vec::new();
    for selector in selectors.into_iter().flatten() {
        let Ok(selector) = Selector::try_from(selector.clone()) else {
            continue;
        };
        for other in &sorted {
            if other.name_any() == role.name_any() || !selector.matches(other.labels()) {
                continue;
            }
            for r in other.rules.iter().flatten() {
                if !rules.contains(r) {
                    rules.push(r.clone());
                }
            }
        }
    }
    Some(rules)
}

/// Runs the controller until its future is dropped.
pub async fn run(client: kube::Client) {
    let api: Api<ClusterRole> = Api::all(client.clone());
    let controller = Controller::new(api.clone(), watcher::Config::default());
    let mapper_store = controller.store();
    let context = Arc::new(Context { client });
    controller
        .watches(
            api,
            watcher::Config::default(),
            move |_changed: ClusterRole| {
                mapper_store
                    .state()
                    .into_iter()
                    .filter(|r| r.aggregation_rule.is_some())
                    .map(|r| ObjectRef::from_obj(&*r))
                    .collect::<Vec<_>>()
            },
        )
        .run(reconcile, error_policy, context)
        .for_each(|result| {
            if let Err(e) = result {
                tracing::debug!(error = %e, "clusterrole aggregation");
            }
            futures::future::ready(())
        })
        .await;
}

fn error_policy(role: Arc<ClusterRole>, error: &Error, _: Arc<Context>) -> Action {
    tracing::warn!(clusterrole = %role.name_any(), %error, "cannot aggregate the ClusterRole");
    Action::requeue(Duration::from_secs(2))
}

async fn reconcile(role: Arc<ClusterRole>, ctx: Arc<Context>) -> Result<Action, Error> {
    if role.aggregation_rule.is_none() {
        return Ok(Action::await_change());
    }
    let api: Api<ClusterRole> = Api::all(ctx.client.clone());
    let all: Vec<Arc<ClusterRole>> = api
        .list(&Default::default())
        .await?
        .items
        .into_iter()
        .map(Arc::new)
        .collect();
    let Some(current) = all.iter().find(|r| r.name_any() == role.name_any()) else {
        return Ok(Action::await_change());
    };
    let Some(rules) = aggregated_rules(current, &all) else {
        return Ok(Action::await_change());
    };
    if current.rules.clone().unwrap_or_default() == rules {
        return Ok(Action::await_change());
    }
    let patch = serde_json::json!({"rules": rules});
    match api
        .patch(
            &role.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => tracing::debug!(clusterrole = %role.name_any(), rules = rules.len(), "aggregated"),
        Err(kube::Error::Api(s)) if s.code == 404 => {}
        Err(e) => return Err(e.into()),
    }
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::rbac::v1::AggregationRule;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
    use kube::api::ObjectMeta;

    fn role(name: &str, label: Option<&str>, verbs: &[&str]) -> Arc<ClusterRole> {
        Arc::new(ClusterRole {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: label.map(|l| [(l.to_string(), "true".to_string())].into()),
                ..Default::default()
            },
            rules: Some(
                verbs
                    .iter()
                    .map(|v| PolicyRule {
                        verbs: vec![v.to_string()],
                        api_groups: Some(vec![String::new()]),
                        resources: Some(vec!["pods".into()]),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        })
    }

    #[test]
    fn aggregates_matching_roles_in_name_order_without_duplicates() {
        let label = "rbac.authorization.k8s.io/aggregate-to-view";
        let mut view = (*role("view", None, &[])).clone();
        view.aggregation_rule = Some(AggregationRule {
            cluster_role_selectors: Some(vec![LabelSelector {
                match_labels: Some([(label.to_string(), "true".to_string())].into()),
                ..Default::default()
            }]),
        });
        let all = vec![
            role("b", Some(label), &["list", "get"]),
            role("a", Some(label), &["get"]),
            role("other", None, &["delete"]),
            Arc::new(view.clone()),
        ];
        let rules = aggregated_rules(&view, &all).unwrap();
        let verbs: Vec<&str> = rules.iter().map(|r| r.verbs[0].as_str()).collect();
        assert_eq!(verbs, ["get", "list"]);
        assert!(aggregated_rules(&all[0], &all).is_none());
    }
}
