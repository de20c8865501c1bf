//! The RuntimeClasses `ferry up` creates: `host` (handler `host`, Ferry's host-process
//! runtime) always, and `runc` (handler `runc`, containerd's runc runtime) when the node agent
//! has a containerd endpoint. See `docs/runtimes.md`.

use anyhow::Context;
use k8s_openapi::api::node::v1::RuntimeClass;
use kube::api::{Api, ObjectMeta, PostParams};

/// Creates the RuntimeClasses that are missing (existing ones are left as they are).
pub async fn install(client: &kube::Client, containerd: bool) -> anyhow::Result<()> {
    let api: Api<RuntimeClass> = Api::all(client.clone());
    let mut classes = vec![("host", "host")];
    if containerd {
        classes.push(("runc", "runc"));
    }
    for (name, handler) in classes {
        if api.get_opt(name).await?.is_some() {
            continue;
        }
        let class = RuntimeClass {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(
                    [(
                        "app.kubernetes.io/managed-by".to_string(),
                        "ferry".to_string(),
                    )]
                    .into(),
                ),
                ..Default::default()
            },
            handler: handler.into(),
            ..Default::default()
        };
        match api.create(&PostParams::default(), &class).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(e).with_context(|| format!("cannot create RuntimeClass {name}")),
        }
    }
    Ok(())
}
