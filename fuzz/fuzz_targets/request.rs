//! The whole request path: any method, path, query parameters (selectors, timeouts, grace
//! periods, limit/continue, resourceVersion, watch, …) and body, through the server's router
//! over a real store. Every request gets an answer, never a `500` (a panic is one), and every
//! error is a well-formed `metav1.Status` (`ferry_apiserver::probe::check`, which the property
//! test `crates/ferry-apiserver/tests/request_path.rs` drives too).
#![no_main]

use std::sync::LazyLock;

use ferry_apiserver::probe::{self, ProbeRequest};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    method: u8,
    base: u8,
    tail: String,
    params: Vec<(u8, String)>,
    content_type: u8,
    body: Vec<u8>,
}

struct App {
    runtime: tokio::runtime::Runtime,
    router: axum::Router,
}

static APP: LazyLock<App> = LazyLock::new(|| {
    let dir = std::env::temp_dir().join(format!("ferry-fuzz-request-{}", std::process::id()));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let router = runtime
        .block_on(async { probe::app(&dir) })
        .expect("the store opens");
    App { runtime, router }
});

fuzz_target!(|input: Input| {
    let request = ProbeRequest {
        method: input.method,
        base: input.base,
        tail: input.tail,
        params: input.params,
        content_type: input.content_type,
        body: input.body,
    };
    if let Err(problem) = APP.runtime.block_on(probe::check(&APP.router, &request)) {
        panic!("{problem}");
    }
});
