//! Patching: any (object, patch) pair under any patch type must apply or fail with a clear
//! error; never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    // The input is "object NUL patch".
    let mut parts = rest.splitn(2, |b| *b == 0);
    let (Some(object), Some(patch)) = (parts.next(), parts.next()) else {
        return;
    };
    let (Ok(mut object), Ok(patch)) = (
        serde_json::from_slice::<serde_json::Value>(object),
        serde_json::from_slice::<serde_json::Value>(patch),
    ) else {
        return;
    };
    use ferry_apiserver::patch;
    match selector % 3 {
        0 => patch::merge(&mut object, &patch),
        1 => {
            let _ = patch::json(&mut object, &patch);
        }
        _ => {
            let _ = patch::strategic(&mut object, &patch);
        }
    }
});
