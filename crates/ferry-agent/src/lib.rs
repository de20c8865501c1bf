//! Ferry's node agent: GPU discovery, node registration, heartbeats, and pods run as host processes
