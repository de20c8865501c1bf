//! Property test of the whole request path (the same entry point as the fuzz target
//! `fuzz/fuzz_targets/request.rs`): arbitrary paths, every query parameter with arbitrary
//! strings and numbers, arbitrary bodies. The server answers each, never with a `500`, and
//! every error is a well-formed `metav1.Status`.

use ferry_apiserver::probe::{self, BASES, PARAMS, ProbeRequest};
use proptest::prelude::*;

/// Values that reach the parsers' edges, beside arbitrary text.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|n| n.to_string()),
        "[a-zé=!,()<>. \\\\/-]{0,24}",
        prop::sample::select(vec![
            "9223372036854775807",
            "-9223372036854775808",
            "18446744073709551616",
            "1e13",
            "10000000000000",
            "-1",
            "0",
            "true",
            "All",
            "metadata.name=é",
            "metadata.name!=é,status.phase=Running",
            "app in (a,é)",
            "x notin (",
            "é>1",
        ])
        .prop_map(str::to_string),
    ]
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(Vec::new()),
        any::<Vec<u8>>(),
        any::<String>().prop_map(String::into_bytes),
        ("[a-zé-]{0,12}", prop::sample::select(vec!["ConfigMap", "Pod", "Namespace", "Node"]))
            .prop_map(|(name, kind)| {
                format!(
                    r#"{{"apiVersion":"v1","kind":"{kind}","metadata":{{"name":"{name}"}},"spec":{{"containers":[{{"name":"c","image":"i"}}]}}}}"#
                )
                .into_bytes()
            }),
    ]
}

fn request() -> impl Strategy<Value = ProbeRequest> {
    (
        any::<u8>(),
        0..BASES.len() as u8,
        prop_oneof![
            Just(String::new()),
            any::<String>(),
            "(/[a-zé%.]{0,8}){0,4}"
        ],
        prop::collection::vec((0..PARAMS.len() as u8, value()), 0..5),
        any::<u8>(),
        body(),
    )
        .prop_map(
            |(method, base, tail, params, content_type, body)| ProbeRequest {
                method,
                base,
                tail,
                params,
                content_type,
                body,
            },
        )
}

#[test]
fn any_request_gets_an_answer_and_errors_are_statuses() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let app = runtime.block_on(async { probe::app(dir.path()) }).unwrap();
    // 2,000 cases per CI run; `PROPTEST_CASES` runs more.
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(2000);
    let config = ProptestConfig {
        cases,
        ..ProptestConfig::default()
    };
    proptest!(config, |(r in request())| {
        let outcome = runtime.block_on(probe::check(&app, &r));
        prop_assert!(outcome.is_ok(), "{}", outcome.unwrap_err());
    });
}

/// The inputs that once panicked, each on its own.
#[test]
fn known_panics_are_answered() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let app = runtime.block_on(async { probe::app(dir.path()) }).unwrap();
    let param = |name: &str| PARAMS.iter().position(|p| *p == name).unwrap() as u8;
    let base = |path: &str| BASES.iter().position(|p| *p == path).unwrap() as u8;
    let pods = base("/api/v1/namespaces/default/pods");
    let cases = [
        // A non-ASCII field selector: a byte slice off a char boundary in selectors.rs.
        (
            pods,
            vec![(param("fieldSelector"), "metadata.name=é".to_string())],
            200,
        ),
        (
            pods,
            vec![(param("fieldSelector"), "metadata.name!=é".to_string())],
            200,
        ),
        (pods, vec![(param("fieldSelector"), "é".to_string())], 400),
        // A watch of i64::MAX seconds: an Instant overflow in watch.rs.
        (
            pods,
            vec![
                (param("watch"), "true".to_string()),
                (param("timeoutSeconds"), i64::MAX.to_string()),
            ],
            200,
        ),
    ];
    for (base, params, want) in cases {
        let r = ProbeRequest {
            base,
            params,
            ..ProbeRequest::default()
        };
        let got = runtime.block_on(probe::check(&app, &r));
        assert_eq!(got, Ok(want), "{}", r.uri());
    }
}
