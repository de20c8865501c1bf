//! Shared helpers of ferry-sim's integration tests.

#![allow(dead_code)]

use std::path::PathBuf;

use ferry_sim::trace::{self, TraceError};

/// Whether the tests run under CI (`CI` set, and not `false` or `0`): there a missing input
/// fails the test instead of skipping it.
pub fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// The trace folder, or `None` (the test skips, saying so) when it is missing outside CI.
/// Under CI a missing folder fails the test.
pub fn trace_dir() -> Option<PathBuf> {
    require(trace::find_trace_dir(None), under_ci())
}

/// [`trace_dir`]'s decision, for a given lookup and CI setting.
pub fn require(found: Result<PathBuf, TraceError>, ci: bool) -> Option<PathBuf> {
    match found {
        Ok(dir) => Some(dir),
        Err(e) if ci => panic!("CI is set and the trace folder is missing: {e}"),
        Err(e) => {
            eprintln!("SKIPPED (set CI=true to make this a failure): {e}");
            None
        }
    }
}
