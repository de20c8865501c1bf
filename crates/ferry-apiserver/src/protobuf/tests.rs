//! Unit tests: objects encoded with `k8s-pb` + `prost` (independent of the decoder's table),
//! wrapped in the envelope, decoded, and compared with the exact Kubernetes JSON.

use std::collections::BTreeMap;

use k8s_pb::api::apps::v1 as apps;
use k8s_pb::api::coordination::v1 as coordination;
use k8s_pb::api::core::v1 as core;
use k8s_pb::api::scheduling::v1 as scheduling;
use k8s_pb::apiextensions_apiserver::pkg::apis::apiextensions::v1 as apiext;
use k8s_pb::apimachinery::pkg::api::resource::Quantity;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_pb::apimachinery::pkg::runtime::{RawExtension, TypeMeta, Unknown};
use k8s_pb::apimachinery::pkg::util::intstr::IntOrString;
use proptest::prelude::*;
use prost::Message as _;
use serde_json::{Value, json};

use super::decode::{go_duration, rfc3339};
use super::schema::{KINDS, META_KINDS};
use super::{MAGIC, MAX_DEPTH, ProtobufError, decode, supports};

/// 2024-01-02T03:04:05Z.
const T0: i64 = 1_704_164_645;

fn s(x: &str) -> Option<String> {
    Some(x.to_string())
}

fn strings(xs: &[&str]) -> Vec<String> {
    xs.iter().map(|x| x.to_string()).collect()
}

fn q(x: &str) -> Quantity {
    Quantity { string: s(x) }
}

fn map<V>(entries: &[(&str, V)]) -> BTreeMap<String, V>
where
    V: Clone,
{
    entries
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

fn time(seconds: i64) -> meta::Time {
    meta::Time {
        seconds: Some(seconds),
        nanos: Some(0),
    }
}

/// Wraps a raw object message in the magic and `runtime.Unknown`, as client-go does (it
/// writes the empty content encoding and type too).
fn envelope(api_version: &str, kind: &str, raw: Vec<u8>) -> Vec<u8> {
    let unknown = Unknown {
        type_meta: Some(TypeMeta {
            api_version: s(api_version),
            kind: s(kind),
        }),
        raw: Some(raw),
        content_encoding: s(""),
        content_type: s(""),
    };
    let mut out = MAGIC.to_vec();
    out.extend(unknown.encode_to_vec());
    out
}

fn roundtrip(api_version: &str, kind: &str, message: &impl prost::Message) -> Value {
    decode(&envelope(api_version, kind, message.encode_to_vec()))
        .unwrap_or_else(|e| panic!("decoding {kind}: {e}"))
}

fn object_meta(name: &str, namespace: &str) -> meta::ObjectMeta {
    meta::ObjectMeta {
        name: s(name),
        namespace: s(namespace),
        // Go writes every non-pointer string, empty or not.
        generate_name: s(""),
        resource_version: s(""),
        ..Default::default()
    }
}

fn pod() -> core::Pod {
    let container = core::Container {
        name: s("app"),
        image: s("nginx:1.27"),
        command: strings(&["sh", "-c"]),
        args: strings(&["echo hi"]),
        env: vec![
            core::EnvVar {
                name: s("MODE"),
                value: s("prod"),
                value_from: None,
            },
            core::EnvVar {
                name: s("TOKEN"),
                value: s(""),
                value_from: Some(core::EnvVarSource {
                    secret_key_ref: Some(core::SecretKeySelector {
                        local_object_reference: Some(core::LocalObjectReference {
                            name: s("creds"),
                        }),
                        key: s("token"),
                        optional: None,
                    }),
                    ..Default::default()
                }),
            },
        ],
        resources: Some(core::ResourceRequirements {
            limits: map(&[
                ("cpu", q("500m")),
                ("memory", q("1Gi")),
                ("nvidia.com/gpu", q("1")),
            ]),
            requests: map(&[("cpu", q("250m"))]),
            claims: vec![],
        }),
        ports: vec![core::ContainerPort {
            name: s("http"),
            container_port: Some(8080),
            protocol: s("TCP"),
            ..Default::default()
        }],
        volume_mounts: vec![core::VolumeMount {
            name: s("config"),
            mount_path: s("/etc/app"),
            read_only: Some(true),
            ..Default::default()
        }],
        stdin: Some(false),
        ..Default::default()
    };
    core::Pod {
        metadata: Some(meta::ObjectMeta {
            labels: map(&[("app", "web".to_string())]),
            creation_timestamp: Some(time(T0)),
            ..object_meta("web", "default")
        }),
        spec: Some(core::PodSpec {
            volumes: vec![
                core::Volume {
                    name: s("config"),
                    volume_source: Some(core::VolumeSource {
                        config_map: Some(core::ConfigMapVolumeSource {
                            local_object_reference: Some(core::LocalObjectReference {
                                name: s("app-config"),
                            }),
                            items: vec![core::KeyToPath {
                                key: s("a"),
                                path: s("a.txt"),
                                mode: None,
                            }],
                            default_mode: Some(0o644),
                            optional: None,
                        }),
                        ..Default::default()
                    }),
                },
                core::Volume {
                    name: s("scratch"),
                    volume_source: Some(core::VolumeSource {
                        empty_dir: Some(core::EmptyDirVolumeSource {
                            medium: s(""),
                            size_limit: Some(q("1Gi")),
                        }),
                        ..Default::default()
                    }),
                },
            ],
            containers: vec![container],
            restart_policy: s("Never"),
            termination_grace_period_seconds: Some(0),
            node_name: s(""),
            host_network: Some(false),
            security_context: Some(core::PodSecurityContext {
                run_as_user: Some(0),
                supplemental_groups: vec![1000, 2000],
                ..Default::default()
            }),
            ..Default::default()
        }),
        status: Some(core::PodStatus::default()),
    }
}

#[test]
fn pod_with_containers_env_resources_volumes_and_time() {
    let got = roundtrip("v1", "Pod", &pod());
    let want = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "web",
            "namespace": "default",
            "labels": {"app": "web"},
            "creationTimestamp": "2024-01-02T03:04:05Z"
        },
        "spec": {
            "volumes": [
                {
                    "name": "config",
                    "configMap": {
                        "name": "app-config",
                        "items": [{"key": "a", "path": "a.txt"}],
                        "defaultMode": 420
                    }
                },
                {"name": "scratch", "emptyDir": {"sizeLimit": "1Gi"}}
            ],
            "containers": [{
                "name": "app",
                "image": "nginx:1.27",
                "command": ["sh", "-c"],
                "args": ["echo hi"],
                "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
                "env": [
                    {"name": "MODE", "value": "prod"},
                    {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}}
                ],
                "resources": {
                    "limits": {"cpu": "500m", "memory": "1Gi", "nvidia.com/gpu": "1"},
                    "requests": {"cpu": "250m"}
                },
                "volumeMounts": [{"name": "config", "mountPath": "/etc/app", "readOnly": true}],
                "stdin": false
            }],
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 0,
            "hostNetwork": false,
            "securityContext": {"runAsUser": 0, "supplementalGroups": [1000, 2000]}
        },
        "status": {}
    });
    assert_eq!(got, want);
    // The JSON is what k8s-openapi (and so kube-rs) reads.
    let typed: k8s_openapi::api::core::v1::Pod = serde_json::from_value(got).unwrap();
    assert_eq!(
        typed.spec.unwrap().containers[0].args,
        Some(strings(&["echo hi"]))
    );
}

#[test]
fn service_with_int_and_string_target_ports() {
    let port = |name: &str, port: i32, target: IntOrString| core::ServicePort {
        name: s(name),
        protocol: s("TCP"),
        port: Some(port),
        target_port: Some(target),
        node_port: Some(0),
        app_protocol: None,
    };
    let service = core::Service {
        metadata: Some(object_meta("web", "default")),
        spec: Some(core::ServiceSpec {
            ports: vec![
                port(
                    "http",
                    80,
                    IntOrString {
                        r#type: Some(0),
                        int_val: Some(8080),
                        str_val: s(""),
                    },
                ),
                port(
                    "https",
                    443,
                    IntOrString {
                        r#type: Some(1),
                        int_val: Some(0),
                        str_val: s("https"),
                    },
                ),
            ],
            selector: map(&[("app", "web".to_string())]),
            cluster_ip: s(""),
            r#type: s("ClusterIP"),
            session_affinity: s("None"),
            ..Default::default()
        }),
        status: Some(core::ServiceStatus {
            load_balancer: Some(core::LoadBalancerStatus::default()),
            conditions: vec![],
        }),
    };
    let got = roundtrip("v1", "Service", &service);
    let want = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "ports": [
                {"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080, "nodePort": 0},
                {"name": "https", "protocol": "TCP", "port": 443, "targetPort": "https", "nodePort": 0}
            ],
            "selector": {"app": "web"},
            "type": "ClusterIP",
            "sessionAffinity": "None"
        },
        "status": {"loadBalancer": {}}
    });
    assert_eq!(got, want);
}

#[test]
fn secret_bytes_are_base64() {
    let secret = core::Secret {
        metadata: Some(object_meta("creds", "default")),
        data: map(&[
            ("bin", vec![0x00, 0xff, 0xfe, 0x80]),
            ("text", b"hello".to_vec()),
            ("empty", vec![]),
        ]),
        string_data: BTreeMap::new(),
        r#type: s("Opaque"),
        immutable: Some(false),
    };
    let got = roundtrip("v1", "Secret", &secret);
    let want = json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "creds", "namespace": "default"},
        "data": {"bin": "AP/+gA==", "text": "aGVsbG8=", "empty": ""},
        "type": "Opaque",
        "immutable": false
    });
    assert_eq!(got, want);
}

#[test]
fn config_map_keeps_empty_values() {
    let config_map = core::ConfigMap {
        metadata: Some(object_meta("settings", "team-a")),
        data: map(&[("a", "1".to_string()), ("blank", String::new())]),
        binary_data: map(&[("b", vec![1u8, 2, 3])]),
        immutable: Some(true),
    };
    let got = roundtrip("v1", "ConfigMap", &config_map);
    let want = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "settings", "namespace": "team-a"},
        "data": {"a": "1", "blank": ""},
        "binaryData": {"b": "AQID"},
        "immutable": true
    });
    assert_eq!(got, want);
}

#[test]
fn namespace() {
    let namespace = core::Namespace {
        metadata: Some(meta::ObjectMeta {
            labels: map(&[("team", "a".to_string())]),
            ..object_meta("team-a", "")
        }),
        spec: Some(core::NamespaceSpec {
            finalizers: strings(&["kubernetes"]),
        }),
        status: Some(core::NamespaceStatus {
            phase: s("Active"),
            conditions: vec![],
        }),
    };
    let got = roundtrip("v1", "Namespace", &namespace);
    let want = json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": "team-a", "labels": {"team": "a"}},
        "spec": {"finalizers": ["kubernetes"]},
        "status": {"phase": "Active"}
    });
    assert_eq!(got, want);
}

#[test]
fn binding_with_annotations() {
    let binding = core::Binding {
        metadata: Some(meta::ObjectMeta {
            annotations: map(&[("ferry.ai/gpus", "0,1".to_string())]),
            ..object_meta("web", "default")
        }),
        target: Some(core::ObjectReference {
            kind: s("Node"),
            name: s("node-1"),
            api_version: s("v1"),
            namespace: s(""),
            ..Default::default()
        }),
    };
    let got = roundtrip("v1", "Binding", &binding);
    let want = json!({
        "apiVersion": "v1",
        "kind": "Binding",
        "metadata": {
            "name": "web",
            "namespace": "default",
            "annotations": {"ferry.ai/gpus": "0,1"}
        },
        "target": {"kind": "Node", "name": "node-1", "apiVersion": "v1"}
    });
    assert_eq!(got, want);
}

#[test]
fn lease_micro_times() {
    let lease = coordination::Lease {
        metadata: Some(object_meta("ferry-scheduler", "kube-system")),
        spec: Some(coordination::LeaseSpec {
            holder_identity: s("ferry-scheduler-1"),
            lease_duration_seconds: Some(15),
            acquire_time: Some(meta::MicroTime {
                seconds: Some(T0),
                nanos: Some(0),
            }),
            renew_time: Some(meta::MicroTime {
                seconds: Some(T0 + 10),
                nanos: Some(123_456_789),
            }),
            lease_transitions: Some(2),
            ..Default::default()
        }),
    };
    let got = roundtrip("coordination.k8s.io/v1", "Lease", &lease);
    let want = json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": "ferry-scheduler", "namespace": "kube-system"},
        "spec": {
            "holderIdentity": "ferry-scheduler-1",
            "leaseDurationSeconds": 15,
            "acquireTime": "2024-01-02T03:04:05.000000Z",
            "renewTime": "2024-01-02T03:04:15.123456Z",
            "leaseTransitions": 2
        }
    });
    assert_eq!(got, want);
}

#[test]
fn delete_options_under_any_group_version() {
    let options = meta::DeleteOptions {
        grace_period_seconds: Some(0),
        preconditions: Some(meta::Preconditions {
            uid: s("abc"),
            resource_version: None,
        }),
        propagation_policy: s("Foreground"),
        dry_run: strings(&["All"]),
        ..Default::default()
    };
    for api_version in ["v1", "apps/v1", "meta.k8s.io/v1", "ferry.ai/v1alpha1"] {
        let got = roundtrip(api_version, "DeleteOptions", &options);
        let want = json!({
            "apiVersion": api_version,
            "kind": "DeleteOptions",
            "gracePeriodSeconds": 0,
            "preconditions": {"uid": "abc"},
            "propagationPolicy": "Foreground",
            "dryRun": ["All"]
        });
        assert_eq!(got, want);
    }
}

#[test]
fn priority_class() {
    let class = scheduling::PriorityClass {
        metadata: Some(object_meta("high", "")),
        value: Some(1000),
        global_default: Some(false),
        description: s("for training"),
        preemption_policy: s("Never"),
    };
    let got = roundtrip("scheduling.k8s.io/v1", "PriorityClass", &class);
    let want = json!({
        "apiVersion": "scheduling.k8s.io/v1",
        "kind": "PriorityClass",
        "metadata": {"name": "high"},
        "value": 1000,
        "globalDefault": false,
        "description": "for training",
        "preemptionPolicy": "Never"
    });
    assert_eq!(got, want);
}

fn json_raw(text: &str) -> apiext::Json {
    apiext::Json {
        raw: Some(text.as_bytes().to_vec()),
    }
}

#[test]
fn custom_resource_definition_schema() {
    let props = |ty: &str| apiext::JsonSchemaProps {
        r#type: s(ty),
        ..Default::default()
    };
    let spec_schema = apiext::JsonSchemaProps {
        properties: map(&[
            (
                "replicas",
                apiext::JsonSchemaProps {
                    minimum: Some(1.0),
                    maximum: Some(2.5),
                    default: Some(json_raw("1")),
                    ..props("integer")
                },
            ),
            (
                "mode",
                apiext::JsonSchemaProps {
                    r#enum: vec![json_raw("\"a\""), json_raw("\"b\"")],
                    ..props("string")
                },
            ),
            (
                "ref",
                apiext::JsonSchemaProps {
                    r#ref: s("#/definitions/x"),
                    ..Default::default()
                },
            ),
        ]),
        required: strings(&["replicas"]),
        x_kubernetes_preserve_unknown_fields: Some(true),
        ..props("object")
    };
    let schema = apiext::JsonSchemaProps {
        properties: map(&[
            ("spec", spec_schema),
            (
                "list",
                apiext::JsonSchemaProps {
                    items: Some(Box::new(apiext::JsonSchemaPropsOrArray {
                        schema: Some(Box::new(props("string"))),
                        j_son_schemas: vec![],
                    })),
                    ..props("array")
                },
            ),
            (
                "extra",
                apiext::JsonSchemaProps {
                    additional_properties: Some(Box::new(apiext::JsonSchemaPropsOrBool {
                        allows: Some(true),
                        schema: None,
                    })),
                    ..props("object")
                },
            ),
            (
                "labels",
                apiext::JsonSchemaProps {
                    additional_properties: Some(Box::new(apiext::JsonSchemaPropsOrBool {
                        allows: Some(true),
                        schema: Some(Box::new(props("string"))),
                    })),
                    ..props("object")
                },
            ),
        ]),
        ..props("object")
    };
    let crd = apiext::CustomResourceDefinition {
        metadata: Some(object_meta("trainjobs.ferry.ai", "")),
        spec: Some(apiext::CustomResourceDefinitionSpec {
            group: s("ferry.ai"),
            names: Some(apiext::CustomResourceDefinitionNames {
                plural: s("trainjobs"),
                singular: s("trainjob"),
                short_names: strings(&["tj"]),
                kind: s("TrainJob"),
                list_kind: s("TrainJobList"),
                categories: vec![],
            }),
            scope: s("Namespaced"),
            versions: vec![apiext::CustomResourceDefinitionVersion {
                name: s("v1"),
                served: Some(true),
                storage: Some(true),
                schema: Some(apiext::CustomResourceValidation {
                    open_apiv3_schema: Some(schema),
                }),
                subresources: Some(apiext::CustomResourceSubresources {
                    status: Some(apiext::CustomResourceSubresourceStatus {}),
                    scale: None,
                }),
                ..Default::default()
            }],
            ..Default::default()
        }),
        status: None,
    };
    let got = roundtrip("apiextensions.k8s.io/v1", "CustomResourceDefinition", &crd);
    let want = json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "trainjobs.ferry.ai"},
        "spec": {
            "group": "ferry.ai",
            "names": {
                "plural": "trainjobs",
                "singular": "trainjob",
                "shortNames": ["tj"],
                "kind": "TrainJob",
                "listKind": "TrainJobList"
            },
            "scope": "Namespaced",
            "versions": [{
                "name": "v1",
                "served": true,
                "storage": true,
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {
                        "extra": {"type": "object", "additionalProperties": true},
                        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                        "list": {"type": "array", "items": {"type": "string"}},
                        "spec": {
                            "type": "object",
                            "properties": {
                                "mode": {"type": "string", "enum": ["a", "b"]},
                                "ref": {"$ref": "#/definitions/x"},
                                "replicas": {
                                    "type": "integer",
                                    "default": 1,
                                    "maximum": 2.5,
                                    "minimum": 1
                                }
                            },
                            "required": ["replicas"],
                            "x-kubernetes-preserve-unknown-fields": true
                        }
                    }
                }},
                "subresources": {"status": {}}
            }]
        }
    });
    assert_eq!(got, want);
    let typed: k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition =
        serde_json::from_value(got).unwrap();
    assert_eq!(typed.spec.names.kind, "TrainJob");
}

#[test]
fn deployment_keeps_zero_replicas_and_int_or_string() {
    let deployment = apps::Deployment {
        metadata: Some(object_meta("web", "default")),
        spec: Some(apps::DeploymentSpec {
            replicas: Some(0),
            selector: Some(meta::LabelSelector {
                match_labels: map(&[("app", "web".to_string())]),
                match_expressions: vec![meta::LabelSelectorRequirement {
                    key: s("tier"),
                    operator: s("In"),
                    values: strings(&["front", "back"]),
                }],
            }),
            template: Some(core::PodTemplateSpec {
                metadata: Some(meta::ObjectMeta {
                    labels: map(&[("app", "web".to_string())]),
                    creation_timestamp: Some(meta::Time::default()),
                    ..Default::default()
                }),
                spec: Some(core::PodSpec {
                    containers: vec![core::Container {
                        name: s("app"),
                        image: s("nginx"),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
            }),
            strategy: Some(apps::DeploymentStrategy {
                r#type: s("RollingUpdate"),
                rolling_update: Some(apps::RollingUpdateDeployment {
                    max_unavailable: Some(IntOrString {
                        r#type: Some(0),
                        int_val: Some(0),
                        str_val: s(""),
                    }),
                    max_surge: Some(IntOrString {
                        r#type: Some(1),
                        int_val: Some(0),
                        str_val: s("25%"),
                    }),
                }),
            }),
            ..Default::default()
        }),
        status: None,
    };
    let got = roundtrip("apps/v1", "Deployment", &deployment);
    let want = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "replicas": 0,
            "selector": {
                "matchLabels": {"app": "web"},
                "matchExpressions": [{"key": "tier", "operator": "In", "values": ["front", "back"]}]
            },
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "app", "image": "nginx"}]}
            },
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": 0, "maxSurge": "25%"}
            }
        }
    });
    assert_eq!(got, want);
}

#[test]
fn node_status_and_taints() {
    let node = core::Node {
        metadata: Some(object_meta("node-1", "")),
        spec: Some(core::NodeSpec {
            pod_cid_rs: strings(&["10.0.0.0/24"]),
            unschedulable: Some(true),
            taints: vec![core::Taint {
                key: s("ferry.ai/maintenance"),
                value: s(""),
                effect: s("NoSchedule"),
                time_added: Some(time(T0)),
            }],
            ..Default::default()
        }),
        status: Some(core::NodeStatus {
            capacity: map(&[("cpu", q("8")), ("nvidia.com/gpu", q("4"))]),
            allocatable: map(&[("cpu", q("7500m"))]),
            conditions: vec![core::NodeCondition {
                r#type: s("Ready"),
                status: s("True"),
                last_heartbeat_time: Some(time(T0)),
                last_transition_time: Some(meta::Time::default()),
                ..Default::default()
            }],
            addresses: vec![core::NodeAddress {
                r#type: s("InternalIP"),
                address: s("10.0.0.5"),
            }],
            ..Default::default()
        }),
    };
    let got = roundtrip("v1", "Node", &node);
    let want = json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": "node-1"},
        "spec": {
            "podCIDRs": ["10.0.0.0/24"],
            "unschedulable": true,
            "taints": [{
                "key": "ferry.ai/maintenance",
                "effect": "NoSchedule",
                "timeAdded": "2024-01-02T03:04:05Z"
            }]
        },
        "status": {
            "capacity": {"cpu": "8", "nvidia.com/gpu": "4"},
            "allocatable": {"cpu": "7500m"},
            "conditions": [{
                "type": "Ready",
                "status": "True",
                "lastHeartbeatTime": "2024-01-02T03:04:05Z"
            }],
            "addresses": [{"type": "InternalIP", "address": "10.0.0.5"}]
        }
    });
    assert_eq!(got, want);
}

#[test]
fn event_with_micro_time_series() {
    let event = core::Event {
        metadata: Some(object_meta("web.1", "default")),
        involved_object: Some(core::ObjectReference {
            kind: s("Pod"),
            name: s("web"),
            namespace: s("default"),
            ..Default::default()
        }),
        reason: s("Scheduled"),
        message: s("assigned to node-1"),
        source: Some(core::EventSource {
            component: s("ferry-scheduler"),
            host: s(""),
        }),
        first_timestamp: Some(time(T0)),
        count: Some(3),
        r#type: s("Normal"),
        event_time: Some(meta::MicroTime {
            seconds: Some(T0),
            nanos: Some(5_000),
        }),
        series: Some(core::EventSeries {
            count: Some(2),
            last_observed_time: Some(meta::MicroTime {
                seconds: Some(T0),
                nanos: Some(999_999_999),
            }),
        }),
        ..Default::default()
    };
    let got = roundtrip("v1", "Event", &event);
    let want = json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": "web.1", "namespace": "default"},
        "involvedObject": {"kind": "Pod", "name": "web", "namespace": "default"},
        "reason": "Scheduled",
        "message": "assigned to node-1",
        "source": {"component": "ferry-scheduler"},
        "firstTimestamp": "2024-01-02T03:04:05Z",
        "count": 3,
        "type": "Normal",
        "eventTime": "2024-01-02T03:04:05.000005Z",
        "series": {"count": 2, "lastObservedTime": "2024-01-02T03:04:05.999999Z"}
    });
    assert_eq!(got, want);
}

#[test]
fn managed_fields_and_raw_extensions() {
    let config_map = core::ConfigMap {
        metadata: Some(meta::ObjectMeta {
            managed_fields: vec![meta::ManagedFieldsEntry {
                manager: s("kubectl-create"),
                operation: s("Update"),
                api_version: s("v1"),
                time: Some(time(T0)),
                fields_type: s("FieldsV1"),
                fields_v1: Some(meta::FieldsV1 {
                    raw: Some(br#"{"f:data":{".":{},"f:a":{}}}"#.to_vec()),
                }),
                subresource: s(""),
            }],
            ..object_meta("settings", "default")
        }),
        data: map(&[("a", "1".to_string())]),
        ..Default::default()
    };
    let got = roundtrip("v1", "ConfigMap", &config_map);
    assert_eq!(
        got["metadata"]["managedFields"],
        json!([{
            "manager": "kubectl-create",
            "operation": "Update",
            "apiVersion": "v1",
            "time": "2024-01-02T03:04:05Z",
            "fieldsType": "FieldsV1",
            "fieldsV1": {"f:data": {".": {}, "f:a": {}}}
        }])
    );

    // RawExtension: JSON, and a nested protobuf envelope.
    let revision = |raw: Vec<u8>| apps::ControllerRevision {
        metadata: Some(object_meta("web-1", "default")),
        data: Some(RawExtension { raw: Some(raw) }),
        revision: Some(3),
    };
    let got = roundtrip(
        "apps/v1",
        "ControllerRevision",
        &revision(br#"{"spec":{"a":1}}"#.to_vec()),
    );
    assert_eq!(got["data"], json!({"spec": {"a": 1}}));
    assert_eq!(got["revision"], json!(3));
    let nested = envelope("v1", "ConfigMap", config_map.encode_to_vec());
    let got = roundtrip("apps/v1", "ControllerRevision", &revision(nested));
    assert_eq!(got["data"]["kind"], json!("ConfigMap"));
    assert_eq!(got["data"]["data"], json!({"a": "1"}));
    // An empty RawExtension is null: left out.
    let got = roundtrip("apps/v1", "ControllerRevision", &revision(vec![]));
    assert!(got.get("data").is_none());
}

#[test]
fn empty_strings_are_left_out_except_where_they_mean_something() {
    // PersistentVolumeClaimSpec.storageClassName "" disables dynamic provisioning.
    let claim = core::PersistentVolumeClaim {
        metadata: Some(object_meta("data", "default")),
        spec: Some(core::PersistentVolumeClaimSpec {
            storage_class_name: s(""),
            volume_mode: s(""),
            access_modes: strings(&["ReadWriteOnce"]),
            ..Default::default()
        }),
        status: None,
    };
    let got = roundtrip("v1", "PersistentVolumeClaim", &claim);
    assert_eq!(
        got["spec"],
        json!({"storageClassName": "", "accessModes": ["ReadWriteOnce"]})
    );
}

#[test]
fn repeated_messages_merge_and_unknown_fields_are_skipped() {
    let first = core::ConfigMap {
        metadata: Some(meta::ObjectMeta {
            name: s("a"),
            ..Default::default()
        }),
        data: map(&[("x", "1".to_string())]),
        ..Default::default()
    };
    let second = core::ConfigMap {
        metadata: Some(meta::ObjectMeta {
            labels: map(&[("l", "v".to_string())]),
            ..Default::default()
        }),
        data: map(&[("y", "2".to_string())]),
        ..Default::default()
    };
    let mut raw = first.encode_to_vec();
    raw.extend(second.encode_to_vec());
    // Field 99 (varint), field 100 (64-bit), field 101 (32-bit), field 102 (bytes).
    raw.extend([0x98, 0x06, 0x2a]);
    raw.extend([0xa1, 0x06, 1, 2, 3, 4, 5, 6, 7, 8]);
    raw.extend([0xad, 0x06, 1, 2, 3, 4]);
    raw.extend([0xb2, 0x06, 2, b'h', b'i']);
    let got = decode(&envelope("v1", "ConfigMap", raw)).unwrap();
    assert_eq!(
        got,
        json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "a", "labels": {"l": "v"}},
            "data": {"x": "1", "y": "2"}
        })
    );
}

#[test]
fn packed_and_unpacked_repeated_scalars() {
    // PodSecurityContext.supplementalGroups (4, int64): packed [1000, 2000] and unpacked 7.
    let security_context = [0x22, 0x04, 0xe8, 0x07, 0xd0, 0x0f, 0x20, 0x07];
    let mut spec = vec![0x72, security_context.len() as u8]; // PodSpec.securityContext (14)
    spec.extend(security_context);
    let mut pod = vec![0x12, spec.len() as u8]; // Pod.spec (2)
    pod.extend(spec);
    let got = decode(&envelope("v1", "Pod", pod)).unwrap();
    assert_eq!(
        got["spec"]["securityContext"]["supplementalGroups"],
        json!([1000, 2000, 7])
    );
}

#[test]
fn json_content_type_in_the_envelope() {
    let unknown = Unknown {
        type_meta: Some(TypeMeta {
            api_version: s("v1"),
            kind: s("ConfigMap"),
        }),
        raw: Some(br#"{"metadata":{"name":"j"},"data":{"a":"b"}}"#.to_vec()),
        content_encoding: s(""),
        content_type: s("application/json"),
    };
    let mut body = MAGIC.to_vec();
    body.extend(unknown.encode_to_vec());
    assert_eq!(
        decode(&body).unwrap(),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "j"}, "data": {"a": "b"}})
    );
}

#[test]
fn every_kind_in_the_table_decodes() {
    for (api_version, kind, _) in KINDS {
        let got = decode(&envelope(api_version, kind, vec![])).unwrap();
        assert_eq!(got, json!({"apiVersion": api_version, "kind": kind}));
    }
    for (kind, _) in META_KINDS {
        assert!(supports("batch/v1", kind), "{kind}");
    }
    for (api_version, kind) in super::schema_gen::REQUIRED {
        assert!(supports(api_version, kind), "{api_version} {kind}");
    }
}

#[test]
fn malformed_input_gives_clear_errors() {
    // Not protobuf at all.
    assert_eq!(decode(b""), Err(ProtobufError::MissingMagic));
    assert_eq!(
        decode(b"{\"kind\":\"Pod\"}"),
        Err(ProtobufError::MissingMagic)
    );
    assert_eq!(decode(b"k8s\x01\x0a\x00"), Err(ProtobufError::MissingMagic));

    // A truncated varint in the envelope.
    let err = decode(b"k8s\0\x0a\x80").unwrap_err();
    assert!(
        matches!(&err, ProtobufError::Malformed { offset: 5, reason, .. } if reason == "truncated varint"),
        "{err:?}"
    );
    assert!(err.to_string().contains("truncated varint"), "{err}");

    // A length past the end.
    let err = decode(b"k8s\0\x12\x05\x01").unwrap_err();
    assert!(matches!(err, ProtobufError::Malformed { .. }), "{err:?}");

    // A truncated object: the first 10 bytes of a Pod.
    let raw = pod().encode_to_vec();
    let err = decode(&envelope("v1", "Pod", raw[..10].to_vec())).unwrap_err();
    assert!(matches!(err, ProtobufError::Malformed { .. }), "{err:?}");

    // Wrong wire type: ConfigMap.data (map, field 2) as a varint.
    let err = decode(&envelope("v1", "ConfigMap", vec![0x10, 0x01])).unwrap_err();
    assert_eq!(
        err,
        ProtobufError::WireType {
            offset: err_offset(&err),
            path: "ConfigMap.data in k8s.io.api.core.v1.ConfigMap".into(),
            expected: "length-delimited",
            found: 0,
        }
    );
    // Wrong wire type deeper: ObjectMeta.generation (7, int64) as bytes.
    let err = decode(&envelope("v1", "Pod", vec![0x0a, 0x03, 0x3a, 0x01, 0x00])).unwrap_err();
    assert!(
        err.to_string()
            .contains("Pod.metadata.generation in k8s.io.apimachinery.pkg.apis.meta.v1.ObjectMeta"),
        "{err}"
    );
    // A group wire type: on a known field, and on an unknown one (50) that must be skipped.
    let err = decode(&envelope("v1", "Pod", vec![0x0b])).unwrap_err();
    assert!(
        matches!(err, ProtobufError::WireType { found: 3, .. }),
        "{err:?}"
    );
    let err = decode(&envelope("v1", "Pod", vec![0x93, 0x03])).unwrap_err();
    assert!(err.to_string().contains("groups"), "{err}");
    // Field number 0.
    let err = decode(&envelope("v1", "Pod", vec![0x00, 0x00])).unwrap_err();
    assert!(err.to_string().contains("invalid field number"), "{err}");

    // Unknown kind (custom resources are JSON-only), missing kind, compressed content.
    let err = decode(&envelope("ferry.ai/v1", "TrainJob", vec![])).unwrap_err();
    assert_eq!(
        err,
        ProtobufError::UnknownKind {
            api_version: "ferry.ai/v1".into(),
            kind: "TrainJob".into()
        }
    );
    assert!(err.is_unsupported());
    let err = decode(&envelope("v1", "", vec![])).unwrap_err();
    assert!(matches!(err, ProtobufError::MissingKind { .. }), "{err:?}");
    assert!(!err.is_unsupported());
    let unknown = Unknown {
        type_meta: Some(TypeMeta {
            api_version: s("v1"),
            kind: s("Pod"),
        }),
        raw: Some(vec![]),
        content_encoding: s("gzip"),
        content_type: s(""),
    };
    let mut body = MAGIC.to_vec();
    body.extend(unknown.encode_to_vec());
    assert_eq!(
        decode(&body),
        Err(ProtobufError::UnsupportedEncoding("gzip".into()))
    );

    // Values with no JSON form.
    let bad_time = core::Namespace {
        metadata: Some(meta::ObjectMeta {
            creation_timestamp: Some(time(i64::MAX)),
            ..Default::default()
        }),
        ..Default::default()
    };
    let err = decode(&envelope("v1", "Namespace", bad_time.encode_to_vec())).unwrap_err();
    assert!(
        matches!(&err, ProtobufError::InvalidValue { path, .. } if path.starts_with("Namespace.metadata.creationTimestamp")),
        "{err:?}"
    );
    let bad_json = core::ConfigMap {
        metadata: Some(meta::ObjectMeta {
            managed_fields: vec![meta::ManagedFieldsEntry {
                fields_v1: Some(meta::FieldsV1 {
                    raw: Some(b"{not json".to_vec()),
                }),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    };
    let err = decode(&envelope("v1", "ConfigMap", bad_json.encode_to_vec())).unwrap_err();
    assert!(
        matches!(&err, ProtobufError::InvalidValue { path, .. } if path.starts_with("ConfigMap.metadata.managedFields[0].fieldsV1")),
        "{err:?}"
    );
    let nan = apiext::CustomResourceDefinition {
        spec: Some(apiext::CustomResourceDefinitionSpec {
            versions: vec![apiext::CustomResourceDefinitionVersion {
                schema: Some(apiext::CustomResourceValidation {
                    open_apiv3_schema: Some(apiext::JsonSchemaProps {
                        minimum: Some(f64::NAN),
                        ..Default::default()
                    }),
                }),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    };
    let err = decode(&envelope(
        "apiextensions.k8s.io/v1",
        "CustomResourceDefinition",
        nan.encode_to_vec(),
    ))
    .unwrap_err();
    assert!(matches!(err, ProtobufError::InvalidValue { .. }), "{err:?}");
}

fn err_offset(err: &ProtobufError) -> usize {
    match err {
        ProtobufError::WireType { offset, .. } | ProtobufError::Malformed { offset, .. } => *offset,
        _ => panic!("{err:?}"),
    }
}

#[test]
fn nesting_is_limited() {
    let mut schema = apiext::JsonSchemaProps::default();
    for _ in 0..MAX_DEPTH + 10 {
        schema = apiext::JsonSchemaProps {
            not: Some(Box::new(schema)),
            ..Default::default()
        };
    }
    let crd = apiext::CustomResourceDefinition {
        spec: Some(apiext::CustomResourceDefinitionSpec {
            versions: vec![apiext::CustomResourceDefinitionVersion {
                schema: Some(apiext::CustomResourceValidation {
                    open_apiv3_schema: Some(schema),
                }),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    };
    let err = decode(&envelope(
        "apiextensions.k8s.io/v1",
        "CustomResourceDefinition",
        crd.encode_to_vec(),
    ))
    .unwrap_err();
    assert!(
        matches!(
            err,
            ProtobufError::TooDeep {
                limit: MAX_DEPTH,
                ..
            }
        ),
        "{err:?}"
    );

    // RawExtensions that each hold another protobuf envelope count too.
    let mut raw = core::ConfigMap::default().encode_to_vec();
    let mut body = envelope("v1", "ConfigMap", raw.clone());
    for _ in 0..MAX_DEPTH {
        raw = apps::ControllerRevision {
            data: Some(RawExtension { raw: Some(body) }),
            ..Default::default()
        }
        .encode_to_vec();
        body = envelope("apps/v1", "ControllerRevision", raw.clone());
    }
    let err = decode(&body).unwrap_err();
    assert!(matches!(err, ProtobufError::TooDeep { .. }), "{err:?}");
}

#[test]
fn times_and_durations() {
    assert_eq!(rfc3339(T0, 0, false).unwrap(), "2024-01-02T03:04:05Z");
    // Time drops the nanos (as Go's Time.Unmarshal does); MicroTime truncates to micros.
    assert_eq!(
        rfc3339(T0, 999_999_999, false).unwrap(),
        "2024-01-02T03:04:05Z"
    );
    assert_eq!(
        rfc3339(T0, 1_999, true).unwrap(),
        "2024-01-02T03:04:05.000001Z"
    );
    assert_eq!(
        rfc3339(T0, -1_000, true).unwrap(),
        "2024-01-02T03:04:04.999999Z"
    );
    assert_eq!(rfc3339(0, 0, false).unwrap(), "1970-01-01T00:00:00Z");
    assert_eq!(
        rfc3339(-62_135_596_800, 0, false).unwrap(),
        "0001-01-01T00:00:00Z"
    );
    assert_eq!(rfc3339(253_402_300_800, 0, false), None);
    assert_eq!(rfc3339(i64::MIN, 0, true), None);

    let cases = [
        (0, "0s"),
        (1, "1ns"),
        (1_500, "1.5µs"),
        (250_000_000, "250ms"),
        (1_000_000_000, "1s"),
        (1_500_000_000, "1.5s"),
        (90_000_000_000, "1m30s"),
        (3_600_000_000_000, "1h0m0s"),
        (3_723_000_000_001, "1h2m3.000000001s"),
        (-90_000_000_000, "-1m30s"),
        (i64::MIN, "-2562047h47m16.854775808s"),
    ];
    for (nanos, want) in cases {
        assert_eq!(go_duration(nanos), want, "{nanos}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode(&bytes);
    }

    #[test]
    fn random_bytes_after_the_magic_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut body = MAGIC.to_vec();
        body.extend(bytes);
        let _ = decode(&body);
    }

    #[test]
    fn random_objects_of_every_kind_never_panic(
        kind in 0..KINDS.len(),
        raw in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        let (api_version, kind, _) = KINDS[kind];
        let _ = decode(&envelope(api_version, kind, raw));
    }

    #[test]
    fn mutated_pods_never_panic(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
    ) {
        let mut body = envelope("v1", "Pod", pod().encode_to_vec());
        for (at, byte) in edits {
            let i = at.index(body.len());
            body[i] = byte;
        }
        let _ = decode(&body);
    }
}
