//! Where a node's agent (the kubelet's role) listens, as its Node publishes it: the
//! `InternalIP` address and `daemonEndpoints.kubeletEndpoint.Port`. The API server reaches it
//! there for logs, exec/attach/port-forward and the Summary API, as kube-apiserver reaches a
//! kubelet.

use serde_json::Value;

/// `host:port` of the node's agent (an IPv6 host in brackets), or `None` when the Node
/// publishes no port. A Node without an `InternalIP` is taken to be this machine.
pub fn authority(node: &Value) -> Option<String> {
    let port = node
        .pointer("/status/daemonEndpoints/kubeletEndpoint/Port")
        .and_then(Value::as_i64)
        .filter(|p| (1..=65535).contains(p))?;
    let address = node["status"]["addresses"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|a| a["type"] == "InternalIP")
        .and_then(|a| a["address"].as_str())
        .unwrap_or("127.0.0.1");
    Some(if address.contains(':') {
        format!("[{address}]:{port}")
    } else {
        format!("{address}:{port}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_the_published_endpoint() {
        let node = |addr: &str, port: i64| {
            json!({"status": {"addresses": [{"type": "Hostname", "address": "n"}, {"type": "InternalIP", "address": addr}],
                "daemonEndpoints": {"kubeletEndpoint": {"Port": port}}}})
        };
        assert_eq!(
            authority(&node("10.0.0.2", 10250)).as_deref(),
            Some("10.0.0.2:10250")
        );
        assert_eq!(
            authority(&node("fd00::2", 10250)).as_deref(),
            Some("[fd00::2]:10250")
        );
        assert_eq!(authority(&node("10.0.0.2", 0)), None);
        assert_eq!(authority(&node("10.0.0.2", 70000)), None);
        assert_eq!(authority(&json!({})), None);
    }
}
