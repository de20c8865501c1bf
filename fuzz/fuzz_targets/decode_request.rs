//! Request decoding: any bytes, as JSON, YAML or Kubernetes protobuf, must decode or fail with
//! a clear error; never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let content_type = match selector % 4 {
        0 => "application/json",
        1 => "application/yaml",
        2 => "application/vnd.kubernetes.protobuf",
        _ => "application/json; charset=utf-8",
    };
    let mut headers = http::HeaderMap::new();
    headers.insert(http::header::CONTENT_TYPE, content_type.parse().unwrap());
    let _ = ferry_apiserver::http::decode_body(&headers, body);
});
