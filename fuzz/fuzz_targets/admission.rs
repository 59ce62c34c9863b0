//! `admission::review` on arbitrary request bodies: never panics; an answered review is an
//! `admission.k8s.io/v1` AdmissionReview with the request's `uid`, and a patch it carries
//! applies to the request's object and leaves nothing to patch (kapp's second UPDATE).

#![no_main]

mod checks;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| checks::admission(data));
