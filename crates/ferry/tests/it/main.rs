//! Ferry's integration tests, in one binary: each module is one capability, end to end
//! against real planes (`common`). One binary links once (instead of once per file) and runs
//! its tests on one pool of test threads; the harness gives each plane its own network slot,
//! so tests of different modules run side by side.

mod common;

mod api_apply;
mod api_edge;
mod api_kube_rs;
mod api_kubectl;
mod api_strict;
mod bench_controllers;
mod bench_training;
mod crash_safety;
mod crd_validation;
mod data_dir;
mod disruption_drain;
mod e2e_containerd;
mod e2e_controllers;
mod e2e_dns;
mod e2e_elastic;
mod e2e_limits;
mod e2e_network;
mod e2e_pod_to_pod;
mod e2e_pods;
mod e2e_probes;
mod e2e_queues;
mod e2e_security_context;
mod e2e_services;
mod e2e_status;
mod e2e_streaming;
mod e2e_two_nodes;
mod kubectl_typed;
mod memory;
mod security_admission;
mod security_agent;
mod security_at_rest;
mod security_authn;
mod security_rbac;
mod security_tenants;
mod storage_volumes;
mod training_cli;
mod training_elastic;
mod training_frameworks;
mod training_jobset;
mod training_manifests;
mod training_node_failure;
mod training_pytorch;
mod training_walkthrough;
mod workload_cronjobs;
mod workload_daemonsets;
mod workload_deployments;
mod workload_jobs;
mod workload_scheduling;
mod workload_statefulsets;
