//! The controllers the embedded control plane runs inside the API server process: garbage
//! collection by owner references (background, foreground and orphan propagation), namespace
//! termination, and the time-to-live of Events. On a real cluster, Kubernetes' own
//! controller manager does this work.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use ferry_store::{EventType, ObjectKey, WatchFrom};

use crate::meta;
use crate::registry::ResourceInfo;
use crate::service::{
    DeleteOptions, FOREGROUND_FINALIZER, ORPHAN_FINALIZER, Service, WriteOptions,
};

/// How long Events are kept (as Kubernetes' default `--event-ttl`).
const EVENT_TTL: Duration = Duration::from_secs(3600);
/// Longest time between sweeps even when nothing was deleted (for Event expiry).
const PERIODIC_SWEEP: Duration = Duration::from_secs(30);
/// Shortest time between sweeps under a stream of deletions.
const MIN_SWEEP_GAP: Duration = Duration::from_millis(100);

/// Runs the controllers until the store closes.
pub async fn run(service: Arc<Service>) {
    let mut events = match service.store.watch("", None, WatchFrom::Now) {
        Ok(w) => w,
        Err(e) => {
            tracing::error!(error = %e, "garbage collector cannot watch the store");
            return;
        }
    };
    let relevant_change =
        |e: &ferry_store::Event| e.kind == EventType::Deleted || meta::is_deleting(&e.object);
    loop {
        // Read every queued change now (the store keeps each event in memory until every
        // watcher has read it); if one can matter, sweep once more after this sweep, which
        // may only have done the first step (orphaning dependents before the owner can go).
        let mut again = false;
        while let Some(Ok(e)) = futures::FutureExt::now_or_never(events.next()) {
            again |= relevant_change(&e);
        }
        sweep(&service).await;
        tokio::time::sleep(MIN_SWEEP_GAP).await;
        if again {
            continue;
        }
        // Sweep again after a change that can matter (a deletion or a deletion mark), or
        // after a while anyway; one sweep covers every change that arrived meanwhile.
        let relevant = async {
            loop {
                match events.next().await {
                    Ok(e) if relevant_change(&e) => {
                        return true;
                    }
                    Ok(_) => continue,
                    Err(ferry_store::WatchEnd::Lagged) => return true,
                    Err(ferry_store::WatchEnd::Closed) => return false,
                }
            }
        };
        if let Ok(false) = tokio::time::timeout(PERIODIC_SWEEP, relevant).await {
            return;
        }
    }
}

struct ObjectRef {
    info: Arc<ResourceInfo>,
    namespace: String,
    name: String,
    value: Arc<Value>,
}

/// One pass over every object.
async fn sweep(service: &Arc<Service>) {
    let resources: HashMap<String, Arc<ResourceInfo>> = service
        .registry
        .all()
        .into_iter()
        .map(|r| (r.storage_resource(), r))
        .collect();
    let mut objects: Vec<ObjectRef> = Vec::new();
    service.store.for_each(|key: &ObjectKey, stored| {
        if let Some(info) = resources.get(&key.resource) {
            objects.push(ObjectRef {
                info: info.clone(),
                namespace: key.namespace.clone(),
                name: key.name.clone(),
                value: stored.value.clone(),
            });
        }
    });
    let by_uid: HashMap<&str, &ObjectRef> =
        objects.iter().map(|o| (meta::uid(&o.value), o)).collect();
    let mut referenced: HashSet<&str> = HashSet::new();
    for o in &objects {
        for r in meta::owner_references(&o.value) {
            if let Some(uid) = r["uid"].as_str() {
                referenced.insert(uid);
            }
        }
    }
    let background = DeleteOptions {
        propagation_policy: Some("Background".into()),
        ..Default::default()
    };
    let foreground = DeleteOptions {
        propagation_policy: Some("Foreground".into()),
        ..Default::default()
    };
    let now = chrono::Utc::now();
    for o in &objects {
        let ns = Some(o.namespace.as_str()).filter(|n| !n.is_empty());
        // Dependents: follow their owners.
        let refs = meta::owner_references(&o.value);
        if !refs.is_empty() {
            let mut keep = Vec::new();
            let mut orphaned = 0;
            let mut delete_with = None;
            for r in refs {
                let uid = r["uid"].as_str().unwrap_or_default();
                match by_uid.get(uid) {
                    None => {} // owner gone
                    Some(owner)
                        if meta::is_deleting(&owner.value)
                            && meta::finalizers(&owner.value)
                                .iter()
                                .any(|f| f == ORPHAN_FINALIZER) =>
                    {
                        orphaned += 1;
                    }
                    Some(owner)
                        if meta::is_deleting(&owner.value)
                            && meta::finalizers(&owner.value)
                                .iter()
                                .any(|f| f == FOREGROUND_FINALIZER) =>
                    {
                        delete_with = Some(&foreground);
                        keep.push(r.clone());
                    }
                    Some(_) => keep.push(r.clone()),
                }
            }
            if keep.is_empty() && orphaned == 0 && !meta::is_deleting(&o.value) {
                delete(service, o, ns, &background).await;
                continue;
            }
            if let Some(options) = delete_with
                && !meta::is_deleting(&o.value)
            {
                delete(service, o, ns, options).await;
                continue;
            }
            if keep.len() != refs.len() {
                let patch = json!({"metadata": {"ownerReferences": keep}});
                patch_object(service, o, ns, &patch).await;
            }
        }
        if meta::is_deleting(&o.value) {
            let finalizers = meta::finalizers(&o.value);
            let has_dependents = referenced.contains(meta::uid(&o.value));
            let removable: Vec<&str> = [FOREGROUND_FINALIZER, ORPHAN_FINALIZER]
                .into_iter()
                .filter(|f| finalizers.iter().any(|x| x == f))
                .collect();
            if !removable.is_empty() && !has_dependents {
                let rest: Vec<&String> = finalizers
                    .iter()
                    .filter(|f| !removable.contains(&f.as_str()))
                    .collect();
                let patch = json!({"metadata": {"finalizers": rest}});
                patch_object(service, o, ns, &patch).await;
            }
        }
        // Namespaces being deleted: empty them, then let them go.
        if o.info.group.is_empty() && o.info.plural == "namespaces" && meta::is_deleting(&o.value) {
            let contents: Vec<&ObjectRef> =
                objects.iter().filter(|x| x.namespace == o.name).collect();
            for c in &contents {
                if !meta::is_deleting(&c.value) {
                    delete(service, c, Some(&o.name), &background).await;
                }
            }
            if contents.is_empty() {
                finish_namespace(service, o).await;
            }
        }
        // Events expire.
        if o.info.group.is_empty() && o.info.plural == "events" {
            let last = ["lastTimestamp", "eventTime"]
                .iter()
                .filter_map(|f| o.value[*f].as_str())
                .chain(std::iter::once(meta::meta_str(
                    &o.value,
                    "creationTimestamp",
                )))
                .filter_map(meta::parse_time)
                .max();
            if last.is_some_and(|t| (now - t).to_std().unwrap_or_default() > EVENT_TTL) {
                delete(service, o, ns, &background).await;
            }
        }
    }
}

async fn delete(service: &Service, o: &ObjectRef, ns: Option<&str>, options: &DeleteOptions) {
    match service.delete(&o.info, ns, &o.name, options).await {
        Ok(_) => {
            tracing::debug!(resource = %o.info.plural, namespace = %o.namespace, name = %o.name, "garbage collected")
        }
        Err(e) if e.code == 404 || e.code == 409 => {}
        Err(e) => {
            tracing::warn!(resource = %o.info.plural, name = %o.name, error = %e, "garbage collection failed")
        }
    }
}

async fn patch_object(service: &Service, o: &ObjectRef, ns: Option<&str>, patch: &Value) {
    let result = service
        .patch(
            &o.info,
            ns,
            &o.name,
            crate::patch::PatchKind::Merge,
            patch,
            None,
            &WriteOptions::default(),
        )
        .await;
    if let Err(e) = result
        && e.code != 404
    {
        tracing::warn!(resource = %o.info.plural, name = %o.name, error = %e, "garbage collector could not update owner references");
    }
}

/// Removes the `kubernetes` finalizer of an empty, terminating namespace and deletes it.
async fn finish_namespace(service: &Service, o: &ObjectRef) {
    let key = Service::key(&o.info, None, &o.name);
    let Some(current) = service.store.get(&key) else {
        return;
    };
    if !meta::finalizers(&current.value).is_empty() {
        return; // other finalizers (metadata.finalizers) still hold it
    }
    match service.store.delete(key, Some(current.rev)).await {
        Ok(_) => tracing::info!(namespace = %o.name, "namespace deleted"),
        Err(e) => {
            tracing::debug!(namespace = %o.name, error = %e, "namespace deletion retried later")
        }
    }
}
