//! The time-to-live of Events. kube-apiserver stores each Event under an etcd lease of
//! `--event-ttl` (one hour by default), so Events vanish from storage without any
//! controller; this task is the same storage behaviour over [`ferry_store`]: it removes
//! Events last seen more than [`EVENT_TTL`] ago straight from the store, as an expired lease
//! would (watchers see `DELETED`).

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use serde_json::Value;

use crate::meta;
use crate::service::Service;

/// How long Events are kept (as Kubernetes' default `--event-ttl`).
pub const EVENT_TTL: Duration = Duration::from_secs(3600);
/// How often expired Events are looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(30);

/// Removes expired Events every [`SWEEP_EVERY`] until the task is aborted.
pub async fn run(service: Arc<Service>) {
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    loop {
        tick.tick().await;
        expire_events(&service, Timestamp::now(), EVENT_TTL).await;
    }
}

/// When an Event was last written: the newest of `series.lastObservedTime`,
/// `lastTimestamp`, `eventTime` and `creationTimestamp` (the lease is renewed on each write).
pub fn last_seen(event: &Value) -> Option<Timestamp> {
    [
        event["series"]["lastObservedTime"].as_str(),
        event["lastTimestamp"].as_str(),
        event["eventTime"].as_str(),
        Some(meta::meta_str(event, "creationTimestamp")),
    ]
    .into_iter()
    .flatten()
    .filter_map(meta::parse_time)
    .max()
}

/// Removes the Events last seen more than `ttl` before `now`; returns how many went.
pub async fn expire_events(service: &Service, now: Timestamp, ttl: Duration) -> usize {
    let Some(info) = service.registry.get("", "v1", "events") else {
        return 0;
    };
    let resource = info.storage_resource();
    let ttl = SignedDuration::try_from(ttl).unwrap_or(SignedDuration::MAX);
    let mut expired = Vec::new();
    service.store.for_each(|key, stored| {
        if key.resource == resource
            && last_seen(&stored.value).is_some_and(|t| now.duration_since(t) > ttl)
        {
            expired.push((key.clone(), stored.rev));
        }
    });
    let mut removed = 0;
    for (key, rev) in expired {
        // A conflict means the Event was written again meanwhile: its lease was renewed.
        if service.store.delete(key, Some(rev)).await.is_ok() {
            removed += 1;
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[tokio::test]
    async fn events_expire_from_their_last_write() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            ferry_store::Store::open(ferry_store::StoreConfig::new(dir.path().join("state.db")))
                .unwrap();
        let service = Service::new(store);
        let events = service.registry.get("", "v1", "events").unwrap();
        for (name, last) in [
            ("old", "2020-01-01T00:00:00Z"),
            ("recent", "2020-01-01T00:59:00Z"),
        ] {
            let event = json!({"apiVersion": "v1", "kind": "Event",
                "metadata": {"name": name, "namespace": "default"},
                "involvedObject": {"kind": "Pod", "name": "p", "namespace": "default"},
                "reason": "R", "message": "m", "lastTimestamp": last});
            let key = Service::key(&events, Some("default"), name);
            service.store.create(key, event).await.unwrap();
        }
        let now: Timestamp = "2020-01-01T01:30:00Z".parse().unwrap();
        assert_eq!(expire_events(&service, now, EVENT_TTL).await, 1);
        assert!(service.get(&events, Some("default"), "old").is_err());
        assert!(service.get(&events, Some("default"), "recent").is_ok());
    }
}
