//! Ferry's Kubernetes-compatible API server: a subset of the Kubernetes REST API over ferry-store
