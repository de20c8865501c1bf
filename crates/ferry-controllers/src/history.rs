//! ControllerRevisions of StatefulSets and DaemonSets, as kube-controller-manager's
//! `controller/history`: a revision holds a patch that replaces the owner's pod template
//! (`{"spec":{"template":{...,"$patch":"replace"}}}`), is named `<owner>-<hash>` where the hash
//! is FNV-32a of that data (and the owner's `collisionCount`) encoded with kube's safe
//! alphabet, carries the `controller-revision-hash` label, and is numbered: the newest
//! revision has the highest `revision`. Re-applying an older template renumbers its revision
//! rather than making a new one, and revisions beyond the owner's `revisionHistoryLimit` that
//! no pod uses are deleted, oldest first.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use crate::Error;

/// The label naming the revision of a ControllerRevision and of the pods made from it.
pub const CONTROLLER_REVISION_HASH_LABEL: &str = "controller-revision-hash";

/// The characters kube's `rand.SafeEncodeString` maps to (no vowels, no look-alikes).
const SAFE_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// `rand.SafeEncodeString`: every byte of `s` mapped onto [`SAFE_ALPHABET`].
pub fn safe_encode(s: &str) -> String {
    s.bytes()
        .map(|b| SAFE_ALPHABET[usize::from(b) % SAFE_ALPHABET.len()] as char)
        .collect()
}

/// FNV-1a, 32 bits (Go's `hash/fnv.New32a`).
fn fnv32a(bytes: impl IntoIterator<Item = u8>, mut hash: u32) -> u32 {
    for b in bytes {
        hash ^= u32::from(b);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash
}

/// The hash of revision `data` with the owner's `collision_count`, as `HashControllerRevision`:
/// FNV-32a of the data (and the count's little-endian bytes), the decimal number safe-encoded.
pub fn hash(data: &Value, collision_count: Option<i32>) -> String {
    let mut h = fnv32a(data.to_string().into_bytes(), 0x811c_9dc5);
    if let Some(count) = collision_count {
        h = fnv32a(count.to_le_bytes(), h);
    }
    safe_encode(&h.to_string())
}

/// The name of an owner's revision: `<owner>-<hash>`.
pub fn revision_name(owner: &str, hash: &str) -> String {
    format!("{owner}-{hash}")
}

/// The data of a revision of `template`: a patch that replaces the owner's pod template.
pub fn template_patch(template: &Value) -> Value {
    let mut template = template.clone();
    if let Some(t) = template.as_object_mut() {
        t.insert("$patch".into(), json!("replace"));
    }
    json!({"spec": {"template": template}})
}

/// The pod template a revision holds.
pub fn template_of(revision: &ControllerRevision) -> Option<Value> {
    let mut template = revision.data.0.pointer("/spec/template")?.clone();
    template.as_object_mut()?.remove("$patch");
    Some(template)
}

/// The owner of a set of revisions.
#[derive(Debug, Clone)]
pub struct Owner {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Its uid.
    pub uid: String,
    /// The controller owner reference its revisions carry.
    pub reference: OwnerReference,
    /// The labels its revisions carry (its pod template's).
    pub labels: BTreeMap<String, String>,
    /// The label selector (`k=v,...`) its revisions are listed by.
    pub selector: String,
    /// Its pod template now.
    pub template: Value,
    /// Its `status.collisionCount`.
    pub collision_count: Option<i32>,
    /// How many revisions besides the live ones it keeps.
    pub history_limit: usize,
}

/// The revisions of an owner after [`sync`].
#[derive(Debug, Clone)]
pub struct Revisions {
    /// Every revision it owns, oldest first.
    pub all: Vec<ControllerRevision>,
    /// The revision of its template now.
    pub update: ControllerRevision,
    /// Its `collisionCount` after the sync (raised when a hash collided).
    pub collision_count: Option<i32>,
}

fn owned_by(revision: &ControllerRevision, uid: &str) -> bool {
    revision
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|r| r.controller == Some(true) && r.uid == uid)
}

/// Lists the revisions `owner` controls, oldest (lowest `revision`) first.
pub async fn list(client: &kube::Client, owner: &Owner) -> Result<Vec<ControllerRevision>, Error> {
    let api: Api<ControllerRevision> = Api::namespaced(client.clone(), &owner.namespace);
    let mut all: Vec<ControllerRevision> = api
        .list(&ListParams::default().labels(&owner.selector))
        .await?
        .items
        .into_iter()
        .filter(|r| owned_by(r, &owner.uid))
        .collect();
    all.sort_by(|a, b| {
        a.revision
            .cmp(&b.revision)
            .then(a.metadata.name.cmp(&b.metadata.name))
    });
    Ok(all)
}

/// Makes sure the revision of `owner`'s template exists and is the newest, as
/// `getStatefulSetRevisions`/`constructHistory`: an equal older revision is renumbered, a
/// hash collision with different data raises the collision count.
pub async fn sync(client: &kube::Client, owner: &Owner) -> Result<Revisions, Error> {
    let api: Api<ControllerRevision> = Api::namespaced(client.clone(), &owner.namespace);
    let mut all = list(client, owner).await?;
    let data = template_patch(&owner.template);
    let next = all.last().map_or(1, |r| r.revision.unwrap_or(0) + 1);
    let mut collision_count = owner.collision_count;
    // An existing revision with the same data: the newest of those becomes the update one.
    if let Some(pos) = all.iter().rposition(|r| r.data.0 == data) {
        if pos + 1 != all.len() {
            let name = all[pos].metadata.name.clone().unwrap_or_default();
            let patched = api
                .patch(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"revision": next})),
                )
                .await?;
            all.remove(pos);
            all.push(patched);
        }
        let update = all.last().cloned().expect("just found");
        return Ok(Revisions {
            all,
            update,
            collision_count,
        });
    }
    loop {
        let hash = hash(&data, collision_count);
        let name = revision_name(&owner.name, &hash);
        let mut labels = owner.labels.clone();
        labels.insert(CONTROLLER_REVISION_HASH_LABEL.into(), hash);
        let revision = ControllerRevision {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(owner.namespace.clone()),
                labels: Some(labels),
                owner_references: Some(vec![owner.reference.clone()]),
                ..Default::default()
            },
            data: RawExtension(data.clone()),
            revision: Some(next),
        };
        match api.create(&PostParams::default(), &revision).await {
            Ok(created) => {
                all.push(created.clone());
                return Ok(Revisions {
                    all,
                    update: created,
                    collision_count,
                });
            }
            Err(kube::Error::Api(s)) if s.code == 409 => {
                let existing = api.get(&name).await?;
                if owned_by(&existing, &owner.uid) && existing.data.0 == data {
                    // Ours, created by an earlier run whose list did not see it yet.
                    all.retain(|r| r.metadata.name != existing.metadata.name);
                    all.push(existing.clone());
                    return Ok(Revisions {
                        all,
                        update: existing,
                        collision_count,
                    });
                }
                collision_count = Some(collision_count.unwrap_or(0).saturating_add(1));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Deletes the oldest revisions that are not `live` (the current and update revisions, and
/// those pods still run) beyond `owner.history_limit`.
pub async fn truncate(
    client: &kube::Client,
    owner: &Owner,
    all: &[ControllerRevision],
    live: &[String],
) -> Result<(), Error> {
    let api: Api<ControllerRevision> = Api::namespaced(client.clone(), &owner.namespace);
    let old: Vec<&ControllerRevision> = all
        .iter()
        .filter(|r| {
            let name = r.metadata.name.clone().unwrap_or_default();
            !live.contains(&name)
        })
        .collect();
    let excess = old.len().saturating_sub(owner.history_limit);
    for r in old.into_iter().take(excess) {
        let name = r.metadata.name.clone().unwrap_or_default();
        match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safe_encoding_uses_kubes_alphabet() {
        // '0' is byte 48, 48 % 27 = 21: the 22nd character.
        assert_eq!(safe_encode("0123"), "4567");
        for c in safe_encode("3891827364").chars() {
            assert!(SAFE_ALPHABET.contains(&(c as u8)), "{c}");
        }
    }

    #[test]
    fn fnv32a_matches_the_reference_vectors() {
        assert_eq!(fnv32a(*b"", 0x811c_9dc5), 0x811c_9dc5);
        assert_eq!(fnv32a(*b"a", 0x811c_9dc5), 0xe40c_292c);
        assert_eq!(fnv32a(*b"foobar", 0x811c_9dc5), 0xbf9c_f968);
    }

    #[test]
    fn the_hash_changes_with_the_template_and_the_collision_count() {
        let a = template_patch(&json!({"spec": {"containers": [{"name": "a", "image": "x"}]}}));
        let b = template_patch(&json!({"spec": {"containers": [{"name": "a", "image": "y"}]}}));
        assert_eq!(hash(&a, None), hash(&a, None));
        assert_ne!(hash(&a, None), hash(&b, None));
        assert_ne!(hash(&a, None), hash(&a, Some(1)));
        assert_eq!(revision_name("web", "abc"), "web-abc");
    }

    #[test]
    fn a_revision_gives_back_its_template() {
        let template = json!({"metadata": {"labels": {"app": "web"}}, "spec": {"containers": []}});
        let revision = ControllerRevision {
            data: RawExtension(template_patch(&template)),
            ..Default::default()
        };
        assert_eq!(revision.data.0["spec"]["template"]["$patch"], "replace");
        assert_eq!(template_of(&revision), Some(template));
    }
}
