//! Ferry's live scheduler: watches the API server, places pods with ferry-sched-core, binds them
