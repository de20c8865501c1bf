//! Services: a cluster IP from the plan's Service range (or none: headless), node ports from
//! its NodePort range (see [`crate::allocator`]), port defaults and validation, an immutable
//! cluster IP.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use serde_json::{Value, json};

use super::{Strategy, age, age_column, name_column, object_field, or_none, str_at};
use crate::allocator::AllocError;
use crate::error::{ApiError, ApiResult, FieldCause};
use crate::meta;
use crate::registry::ResourceInfo;
use crate::service::Service;
use crate::table::Column;
use crate::validation;

/// The strategy of Services.
pub struct Services;

const TYPES: &[&str] = &["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"];
const PROTOCOLS: &[&str] = &["TCP", "UDP", "SCTP"];

fn invalid(o: &Value, causes: Vec<FieldCause>) -> ApiError {
    ApiError::invalid("", "Service", meta::name(o), causes)
}

fn alloc_cause(field: &str, value: impl std::fmt::Display, e: AllocError) -> FieldCause {
    FieldCause::invalid(field, value, e.to_string())
}

fn wants_node_ports(spec: &Value) -> bool {
    matches!(
        spec["type"].as_str(),
        Some("NodePort") | Some("LoadBalancer")
    )
}

/// Gives every port of a NodePort Service a node port (the requested one if free).
/// `keep` are the ports the Service held before (an update).
fn allocate_node_ports(service: &Service, body: &mut Value, keep: &HashSet<u16>) -> ApiResult<()> {
    if !wants_node_ports(&body["spec"]) {
        return Ok(());
    }
    let ns = meta::namespace(body).to_string();
    let name = meta::name(body).to_string();
    let mut here = HashSet::new();
    let mut causes = Vec::new();
    let count = body["spec"]["ports"].as_array().map_or(0, Vec::len);
    for i in 0..count {
        let requested = body["spec"]["ports"][i]["nodePort"]
            .as_u64()
            .filter(|n| *n != 0)
            .map(|n| n as u16);
        let field = format!("spec.ports[{i}].nodePort");
        let result = match requested {
            Some(p) if keep.contains(&p) && !here.contains(&p) => Ok(p),
            _ => service
                .allocator
                .allocate_port(&service.store, (&ns, &name), requested, &here),
        };
        match result {
            Ok(p) => {
                here.insert(p);
                body["spec"]["ports"][i]["nodePort"] = json!(p);
            }
            Err(e) => causes.push(alloc_cause(&field, requested.unwrap_or(0), e)),
        }
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(invalid(body, causes))
    }
}

fn node_ports(o: &Value) -> HashSet<u16> {
    o["spec"]["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["nodePort"].as_u64().map(|n| n as u16))
        .collect()
}

impl Strategy for Services {
    fn resource(&self) -> Option<ResourceInfo> {
        Some(
            ResourceInfo::builtin("", "v1", "services", "Service", true, &["svc"])
                .with_status()
                .in_category("all"),
        )
    }

    fn name_problem(&self, name: &str) -> Option<String> {
        validation::dns_label_problem(name)
    }

    fn decode(&self, info: &ResourceInfo, object: &mut Value) -> ApiResult<Vec<String>> {
        super::decode_typed::<k8s_openapi::api::core::v1::Service>(info, object)
    }

    fn prepare_for_create(
        &self,
        service: &Service,
        _info: &ResourceInfo,
        body: &mut Value,
    ) -> ApiResult<()> {
        let ns = meta::namespace(body).to_string();
        let name = meta::name(body).to_string();
        let spec = object_field(body, "spec");
        spec.entry("type").or_insert(json!("ClusterIP"));
        spec.entry("sessionAffinity").or_insert(json!("None"));
        let external = spec.get("type").and_then(Value::as_str) == Some("ExternalName");
        for port in spec
            .get_mut("ports")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            if let Some(p) = port.as_object_mut() {
                p.entry("protocol").or_insert(json!("TCP"));
                if let Some(n) = p.get("port").cloned() {
                    p.entry("targetPort").or_insert(n);
                }
            }
        }
        if !external {
            spec.entry("internalTrafficPolicy")
                .or_insert(json!("Cluster"));
            spec.entry("ipFamilies").or_insert(json!(["IPv4"]));
            spec.entry("ipFamilyPolicy").or_insert(json!("SingleStack"));
            let requested = spec
                .get("clusterIP")
                .and_then(Value::as_str)
                .or_else(|| {
                    spec.get("clusterIPs")
                        .and_then(|v| v.get(0))
                        .and_then(Value::as_str)
                })
                .unwrap_or_default()
                .to_string();
            if requested == "None" {
                spec.insert("clusterIP".into(), json!("None"));
                spec.insert("clusterIPs".into(), json!(["None"]));
            } else {
                let wanted = if requested.is_empty() {
                    None
                } else {
                    match requested.parse::<Ipv4Addr>() {
                        Ok(ip) => Some(ip),
                        Err(_) => {
                            return Err(invalid(
                                body,
                                vec![FieldCause::invalid(
                                    "spec.clusterIPs[0]",
                                    &requested,
                                    "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
                                )],
                            ));
                        }
                    }
                };
                match service
                    .allocator
                    .allocate_ip(&service.store, &ns, &name, wanted)
                {
                    Ok(ip) => {
                        let spec = object_field(body, "spec");
                        spec.insert("clusterIP".into(), json!(ip.to_string()));
                        spec.insert("clusterIPs".into(), json!([ip.to_string()]));
                    }
                    Err(e) => {
                        return Err(invalid(
                            body,
                            vec![alloc_cause("spec.clusterIPs", &requested, e)],
                        ));
                    }
                }
            }
        }
        allocate_node_ports(service, body, &HashSet::new())?;
        body["status"] = json!({"loadBalancer": {}});
        Ok(())
    }

    fn prepare_for_update(&self, info: &ResourceInfo, old: &Value, new: &mut Value) {
        if info.status {
            super::keep_field(old, new, "status");
        }
        // An update that leaves out the allocated values keeps them (as Kubernetes does).
        let spec = object_field(new, "spec");
        for field in ["clusterIP", "clusterIPs"] {
            let missing = spec
                .get(field)
                .is_none_or(|v| v.is_null() || v.as_str() == Some(""));
            if missing && let Some(v) = old["spec"].get(field) {
                spec.insert(field.into(), v.clone());
            }
        }
        let old_ports = old["spec"]["ports"].as_array().cloned().unwrap_or_default();
        for port in spec
            .get_mut("ports")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            if let Some(p) = port.as_object_mut() {
                p.entry("protocol").or_insert(json!("TCP"));
                if let Some(n) = p.get("port").cloned() {
                    p.entry("targetPort").or_insert(n);
                }
                if p.get("nodePort")
                    .is_none_or(|v| v.as_u64().unwrap_or(0) == 0)
                    && let Some(o) = old_ports
                        .iter()
                        .find(|o| o["port"] == p["port"] && o["protocol"] == p["protocol"])
                    && let Some(n) = o.get("nodePort")
                {
                    p.insert("nodePort".into(), n.clone());
                }
            }
        }
    }

    fn allocate_on_update(
        &self,
        service: &Service,
        _info: &ResourceInfo,
        old: &Value,
        new: &mut Value,
    ) -> ApiResult<()> {
        if !wants_node_ports(&new["spec"]) {
            // Node ports go with the type.
            for p in new["spec"]["ports"]
                .as_array_mut()
                .into_iter()
                .flatten()
                .filter_map(Value::as_object_mut)
            {
                p.remove("nodePort");
            }
            return Ok(());
        }
        allocate_node_ports(service, new, &node_ports(old))
    }

    fn validate(&self, o: &Value, causes: &mut Vec<FieldCause>) {
        let spec = &o["spec"];
        let ty = spec["type"].as_str().unwrap_or("ClusterIP");
        if !TYPES.contains(&ty) {
            causes.push(FieldCause::not_supported("spec.type", ty, TYPES));
        }
        let ports = spec["ports"].as_array().cloned().unwrap_or_default();
        if ports.is_empty() && ty != "ExternalName" && spec["clusterIP"] != "None" {
            causes.push(FieldCause::required("spec.ports"));
        }
        let mut names = HashSet::new();
        let mut seen = HashSet::new();
        for (i, p) in ports.iter().enumerate() {
            let name = p["name"].as_str().unwrap_or_default();
            if ports.len() > 1 && name.is_empty() {
                causes.push(FieldCause::required(format!("spec.ports[{i}].name")));
            }
            if !name.is_empty() {
                if let Some(problem) = validation::dns_label_problem(name) {
                    causes.push(FieldCause::invalid(
                        format!("spec.ports[{i}].name"),
                        name,
                        problem,
                    ));
                }
                if !names.insert(name.to_string()) {
                    causes.push(FieldCause {
                        field: format!("spec.ports[{i}].name"),
                        reason: "FieldValueDuplicate",
                        message: format!("Duplicate value: {}", json!(name)),
                    });
                }
            }
            let protocol = p["protocol"].as_str().unwrap_or("TCP");
            if !PROTOCOLS.contains(&protocol) {
                causes.push(FieldCause::not_supported(
                    format!("spec.ports[{i}].protocol"),
                    protocol,
                    PROTOCOLS,
                ));
            }
            match p["port"].as_i64() {
                Some(1..=65535) => {}
                Some(n) => causes.push(FieldCause::invalid(
                    format!("spec.ports[{i}].port"),
                    n,
                    "must be between 1 and 65535, inclusive",
                )),
                None => causes.push(FieldCause::required(format!("spec.ports[{i}].port"))),
            }
            if !seen.insert((p["port"].as_i64(), protocol.to_string())) {
                causes.push(FieldCause {
                    field: format!("spec.ports[{i}]"),
                    reason: "FieldValueDuplicate",
                    message: format!(
                        "Duplicate value: {}",
                        json!({"port": p["port"], "protocol": protocol})
                    ),
                });
            }
            match &p["targetPort"] {
                Value::Number(n) if !matches!(n.as_i64(), Some(1..=65535)) => {
                    causes.push(FieldCause::invalid(
                        format!("spec.ports[{i}].targetPort"),
                        n,
                        "must be between 1 and 65535, inclusive",
                    ))
                }
                Value::String(s) if s.is_empty() || s.len() > 15 => {
                    causes.push(FieldCause::invalid(
                        format!("spec.ports[{i}].targetPort"),
                        s,
                        "must be no more than 15 characters",
                    ))
                }
                _ => {}
            }
            if ty == "ClusterIP" && p["nodePort"].as_u64().is_some_and(|n| n != 0) {
                causes.push(FieldCause::forbidden(
                    format!("spec.ports[{i}].nodePort"),
                    "may not be used when `type` is 'ClusterIP'",
                ));
            }
        }
        if ty == "NodePort" && spec["clusterIP"] == "None" {
            causes.push(FieldCause::invalid(
                "spec.clusterIPs[0]",
                "None",
                "may not be set to 'None' for NodePort services",
            ));
        }
        if ty == "ExternalName" && spec["externalName"].as_str().is_none_or(str::is_empty) {
            causes.push(FieldCause::required("spec.externalName"));
        }
    }

    fn validate_update(&self, old: &Value, new: &Value, causes: &mut Vec<FieldCause>) {
        let was = old["spec"]["clusterIP"].as_str().unwrap_or_default();
        let is = new["spec"]["clusterIP"].as_str().unwrap_or_default();
        if !was.is_empty() && was != is && old["spec"]["type"] != "ExternalName" {
            causes.push(FieldCause::invalid(
                "spec.clusterIPs[0]",
                is,
                "may not change once set",
            ));
        }
    }

    fn after_write(&self, service: &Service, object: &Value) {
        service.allocator.stored(object);
    }

    fn release(&self, service: &Service, object: &Value) {
        // Not stored: the reservations go, and nothing in the store holds the values.
        service.allocator.stored(object);
    }

    fn columns(&self) -> Option<Vec<Column>> {
        Some(vec![
            name_column(),
            Column::new("Type", "string", 0, "The type of the service."),
            Column::new("Cluster-IP", "string", 0, "The cluster IP of the service."),
            Column::new(
                "External-IP",
                "string",
                0,
                "The external IPs of the service.",
            ),
            Column::new("Port(s)", "string", 0, "The ports of the service."),
            age_column(),
            Column::new("Selector", "string", 1, "The selector of the service."),
        ])
    }

    fn cells(&self, o: &Value) -> Vec<Value> {
        let ports: Vec<String> = o["spec"]["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| {
                let proto = p["protocol"].as_str().unwrap_or("TCP");
                match p["nodePort"].as_u64() {
                    Some(n) => format!("{}:{n}/{proto}", p["port"]),
                    None => format!("{}/{proto}", p["port"]),
                }
            })
            .collect();
        let ports = if ports.is_empty() {
            "<none>".to_string()
        } else {
            ports.join(",")
        };
        let selector: Vec<String> = o["spec"]["selector"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
            .collect();
        let external = match str_at(o, "/spec/type") {
            "ExternalName" => str_at(o, "/spec/externalName").to_string(),
            _ => "<none>".to_string(),
        };
        vec![
            json!(meta::name(o)),
            json!(str_at(o, "/spec/type")),
            json!(or_none(str_at(o, "/spec/clusterIP"))),
            json!(external),
            json!(ports),
            age(o),
            json!(or_none(&selector.join(","))),
        ]
    }

    fn selectable_fields(&self) -> &'static [&'static str] {
        &["spec.clusterIP", "spec.type"]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::{DeleteOptions, WriteOptions};
    use ferry_api::network::ClusterNetwork;

    fn open(dir: &std::path::Path) -> Service {
        let store =
            ferry_store::Store::open(ferry_store::StoreConfig::new(dir.join("state.db"))).unwrap();
        Service::with_network(store, ClusterNetwork::for_index(3))
    }

    async fn create(s: &Service, ns: &str, body: Value) -> ApiResult<Value> {
        let info = s.registry.get("", "v1", "services").unwrap();
        s.create(&info, Some(ns), body, &WriteOptions::default())
            .await
            .map(|w| w.object)
    }

    fn svc(name: &str, spec: Value) -> Value {
        let mut spec = spec;
        if spec.get("ports").is_none() {
            spec["ports"] = json!([{"port": 80}]);
        }
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": spec})
    }

    async fn namespaces(s: &Service) {
        let info = s.registry.get("", "v1", "namespaces").unwrap();
        for ns in ["default", "kube-system"] {
            let o = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
            s.create(&info, None, o, &WriteOptions::default())
                .await
                .unwrap();
        }
    }

    fn cause(e: &ApiError) -> (String, String) {
        let c = &e.details.as_ref().unwrap()["causes"][0];
        (
            c["field"].as_str().unwrap().into(),
            c["message"].as_str().unwrap().into(),
        )
    }

    #[tokio::test]
    async fn cluster_ips_are_unique_reserved_and_survive_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let net = ClusterNetwork::for_index(3);
        let taken;
        {
            let s = open(dir.path());
            namespaces(&s).await;
            let k = create(&s, "default", svc("kubernetes", json!({})))
                .await
                .unwrap();
            assert_eq!(
                k["spec"]["clusterIP"],
                net.kubernetes_service_ip().to_string()
            );
            // .10 only for kube-system/kube-dns.
            let e = create(
                &s,
                "default",
                svc(
                    "dns",
                    json!({"clusterIP": net.dns_service_ip().to_string()}),
                ),
            )
            .await
            .unwrap_err();
            assert_eq!(e.code, 422);
            assert_eq!(cause(&e).0, "spec.clusterIPs");
            let d = create(&s, "kube-system", svc("kube-dns", json!({})))
                .await
                .unwrap();
            assert_eq!(d["spec"]["clusterIP"], net.dns_service_ip().to_string());
            let a = create(&s, "default", svc("a", json!({}))).await.unwrap();
            taken = a["spec"]["clusterIP"].as_str().unwrap().to_string();
            let e = create(&s, "default", svc("b", json!({"clusterIP": taken})))
                .await
                .unwrap_err();
            assert_eq!(e.code, 422);
            assert!(cause(&e).1.contains("already allocated"), "{e:?}");
            let e = create(&s, "default", svc("c", json!({"clusterIP": "10.1.2.3"})))
                .await
                .unwrap_err();
            assert!(cause(&e).1.contains("not in the valid range"), "{e:?}");
            let h = create(&s, "default", svc("h", json!({"clusterIP": "None"})))
                .await
                .unwrap();
            assert_eq!(h["spec"]["clusterIPs"], json!(["None"]));
            s.store.close();
        }
        // A new server over the same store: the address is still taken, until deleted.
        let s = open(dir.path());
        let e = create(&s, "default", svc("b", json!({"clusterIP": taken})))
            .await
            .unwrap_err();
        assert_eq!(e.code, 422);
        let info = s.registry.get("", "v1", "services").unwrap();
        s.delete(&info, Some("default"), "a", &DeleteOptions::default())
            .await
            .unwrap();
        let b = create(&s, "default", svc("b", json!({"clusterIP": taken})))
            .await
            .unwrap();
        assert_eq!(b["spec"]["clusterIP"], taken);
        // Immutable.
        let mut changed = b.clone();
        changed["spec"]["clusterIP"] = json!(net.service_cidr.nth(99).unwrap().to_string());
        changed["spec"]["clusterIPs"] = json!([changed["spec"]["clusterIP"]]);
        let e = s
            .update(
                &info,
                Some("default"),
                "b",
                changed,
                None,
                &WriteOptions::default(),
            )
            .await
            .err()
            .unwrap();
        assert_eq!(e.code, 422);
    }

    #[tokio::test]
    async fn a_dry_run_or_an_invalid_create_holds_no_address() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path());
        namespaces(&s).await;
        let info = s.registry.get("", "v1", "services").unwrap();
        let ip = ClusterNetwork::for_index(3)
            .service_cidr
            .nth(77)
            .unwrap()
            .to_string();
        let dry = WriteOptions {
            dry_run: true,
            ..Default::default()
        };
        s.create(
            &info,
            Some("default"),
            svc("a", json!({"clusterIP": ip})),
            &dry,
        )
        .await
        .unwrap();
        // Invalid (bad protocol) after the address was taken: given back too.
        let bad = json!({"clusterIP": ip, "ports": [{"port": 80, "protocol": "ICMP"}]});
        assert_eq!(
            create(&s, "default", svc("b", bad)).await.unwrap_err().code,
            422
        );
        let a = create(&s, "default", svc("a", json!({"clusterIP": ip})))
            .await
            .unwrap();
        assert_eq!(a["spec"]["clusterIP"], ip);
    }

    #[tokio::test]
    async fn node_ports_come_from_the_range_and_do_not_repeat() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path());
        namespaces(&s).await;
        let (lo, hi) = ClusterNetwork::for_index(3).node_port_range;
        let n = create(&s, "default", svc("n", json!({"type": "NodePort"})))
            .await
            .unwrap();
        let port = n["spec"]["ports"][0]["nodePort"].as_u64().unwrap() as u16;
        assert!((lo..=hi).contains(&port));
        let e = create(
            &s,
            "default",
            svc(
                "m",
                json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": port}]}),
            ),
        )
        .await
        .unwrap_err();
        assert_eq!(e.code, 422);
        assert_eq!(cause(&e).0, "spec.ports[0].nodePort");
        let e = create(
            &s,
            "default",
            svc(
                "m",
                json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 80}]}),
            ),
        )
        .await
        .unwrap_err();
        assert!(cause(&e).1.contains("valid range"), "{e:?}");
        let e = create(
            &s,
            "default",
            svc("m", json!({"ports": [{"name": "a", "port": 80}, {"name": "a", "port": 81, "protocol": "ICMP"}]})),
        )
        .await
        .unwrap_err();
        let fields: Vec<String> = e.details.as_ref().unwrap()["causes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["field"].as_str().unwrap().to_string())
            .collect();
        assert!(
            fields.contains(&"spec.ports[1].name".to_string()),
            "{fields:?}"
        );
        assert!(
            fields.contains(&"spec.ports[1].protocol".to_string()),
            "{fields:?}"
        );
    }
}
