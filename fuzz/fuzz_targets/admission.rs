//! `admission::review` on arbitrary request bodies: never panics; an answered review is an
//! `admission.k8s.io/v1` AdmissionReview with the request's `uid`, and a patch it carries
//! applies to the request's object and leaves nothing to patch (kapp's second UPDATE).

#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use promfed::admission::review;
use serde_json::Value;

/// Base64 decoding of the response patch, kept here so the target needs no extra crate.
fn base64(s: &str) -> Option<Vec<u8>> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes().filter(|c| *c != b'=') {
        acc = (acc << 6) | u32::from(val(c)?);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

fuzz_target!(|data: &[u8]| {
    let values = common::example_values();
    let Ok(reviewed) = review(data, &values) else {
        return;
    };
    let answer: Value = match serde_json::from_slice(&reviewed.body) {
        Ok(v) => v,
        Err(e) => panic!("response is not JSON: {e}"),
    };
    assert_eq!(answer["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(answer["kind"], "AdmissionReview");
    assert_eq!(
        answer["response"]["uid"],
        Value::from(reviewed.uid.as_str())
    );
    let Some(patch) = answer["response"]["patch"].as_str() else {
        return;
    };
    let Some(patch) = base64(patch) else {
        panic!("patch is not base64: {patch:?}");
    };
    let patch: json_patch::Patch = match serde_json::from_slice(&patch) {
        Ok(p) => p,
        Err(e) => panic!("patch is not an RFC 6902 patch: {e}"),
    };
    let Ok(request) = serde_json::from_slice::<Value>(data) else {
        panic!("answered a body that is not JSON");
    };
    let mut object = request["request"]["object"].clone();
    if let Err(e) = json_patch::patch(&mut object, &patch) {
        panic!("patch does not apply to the request's object: {e}");
    }
    match promfed::rewrite::mutate_object(&object, &values) {
        Ok(again) => assert!(
            again.patch.0.is_empty(),
            "not a fixed point: {:?}",
            again.patch
        ),
        Err(e) => panic!("patched object rejected: {e}"),
    }
});
