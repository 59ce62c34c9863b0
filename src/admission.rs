//! The admission side of the webhook: decode an `admission.k8s.io/v1` AdmissionReview,
//! ask [`crate::rewrite::mutate_object`] what to change, wrap the answer in a review with the
//! same `uid`. No I/O and no logging here: [`review`] returns plain data ([`Reviewed`]: the
//! object's identity, the [`Outcome`], the encoded response); the server adds timing, metrics, the log
//! line and HTTP.
//!
//! The response is a pure function of the request and the values: kapp sends a second UPDATE
//! right after each apply and compares the answers, so nothing here may depend on time,
//! ordering of hash maps or the like.

use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use kube::core::{DynamicObject, Status};
use serde_json::Value;

use crate::config::{OnError, Values};
use crate::object_ref::describe;
use crate::rewrite::{Memo, RewriteError, mutate_object_with};

/// The only review version kube-apiserver sends to a `admissionReviewVersions: [v1]` webhook.
pub const API_VERSION: &str = "admission.k8s.io/v1";
/// The `kind` of the review.
pub const KIND: &str = "AdmissionReview";

/// Why a body is not an AdmissionReview we can answer (the server turns it into HTTP 400).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdmissionError {
    /// The body is not JSON at all.
    #[error("body is not JSON: {0}")]
    NotJson(#[source] serde_json::Error),
    /// JSON, but not an `admission.k8s.io/v1` AdmissionReview.
    #[error(
        "expected apiVersion {API_VERSION:?} and kind {KIND:?}, found apiVersion {api_version:?} and kind {kind:?}"
    )]
    WrongType {
        /// The `apiVersion` found.
        api_version: String,
        /// The `kind` found.
        kind: String,
    },
    /// A review without `request` (kube-apiserver always sends one).
    #[error("AdmissionReview has no request")]
    NoRequest,
    /// `request` lacks a field kube-apiserver always sends, or has the wrong type.
    #[error("AdmissionReview request is malformed: {0}")]
    Malformed(#[source] serde_json::Error),
    /// Our own response could not be serialised (a bug, hence HTTP 500).
    #[error("cannot encode the response: {0}")]
    Encode(String),
}

impl AdmissionError {
    /// True when the fault is the caller's (HTTP 400) rather than ours (HTTP 500).
    pub fn is_client_error(&self) -> bool {
        !matches!(self, AdmissionError::Encode(_))
    }
}

/// What was decided for one review.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Allowed with a JSON patch of this many bytes.
    Patched {
        /// Size of the serialised JSON patch.
        patch_bytes: usize,
    },
    /// A matching object already in its federated form: allowed, no patch.
    Unchanged,
    /// Nothing for promfed (operation, subresource or object it does not rewrite): allowed, no patch.
    Skipped(&'static str),
    /// The object could not be rewritten: denied (`onError: deny`).
    Denied,
    /// The object could not be rewritten: allowed unmodified with a warning (`onError: allow`).
    AllowedOnError,
}

impl Outcome {
    /// A short word for logs.
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Patched { .. } => "patched",
            Outcome::Unchanged => "unchanged",
            Outcome::Skipped(_) => "skipped",
            Outcome::Denied => "denied",
            Outcome::AllowedOnError => "allowed_on_error",
        }
    }
}

/// One answered review: the encoded response, and what a log line or metric needs to name the
/// object (never its contents).
#[derive(Debug)]
pub struct Reviewed {
    /// The request's `uid`, echoed in the response.
    pub uid: String,
    /// The object's kind (`ConfigMap`, `Deployment`, ...).
    pub kind: String,
    /// The object's namespace; empty for cluster-scoped objects.
    pub namespace: String,
    /// The object's name (from `metadata.name` when the request has none, as on CREATE with
    /// `generateName`).
    pub name: String,
    /// The admission operation.
    pub operation: Operation,
    /// A `dryRun` request (decided the same way: nothing here has side effects).
    pub dry_run: bool,
    /// What was decided.
    pub outcome: Outcome,
    /// The encoded response AdmissionReview (JSON).
    pub body: Vec<u8>,
}

/// The decision for one request: the response to encode and its outcome.
#[derive(Debug)]
struct Decision {
    response: AdmissionResponse,
    outcome: Outcome,
}

impl Decision {
    fn new(response: AdmissionResponse, outcome: Outcome) -> Self {
        Self { response, outcome }
    }
}

/// Decodes `body`, decides, encodes the response. Never logs object contents.
pub fn review(body: &[u8], values: &Values) -> Result<Reviewed, AdmissionError> {
    review_with(body, values, &Memo::off())
}

/// [`review`], answering ConfigMap data keys seen before from `memo` (the server's, which
/// belongs to `values`).
pub fn review_with(body: &[u8], values: &Values, memo: &Memo) -> Result<Reviewed, AdmissionError> {
    let mut doc: Value = serde_json::from_slice(body).map_err(AdmissionError::NotJson)?;
    let field = |name: &str| {
        doc.get(name)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let (api_version, kind) = (field("apiVersion"), field("kind"));
    if api_version != API_VERSION || kind != KIND {
        return Err(AdmissionError::WrongType { api_version, kind });
    }
    // The object goes to the engine as the raw JSON the API server sent, not re-serialised
    // through typed structs (which would drop or reorder fields); the rest is decoded with
    // kube's types. `oldObject` is not needed to decide and is dropped unparsed.
    let Some(request @ Value::Object(_)) = doc.get_mut("request") else {
        return Err(AdmissionError::NoRequest);
    };
    let object = request
        .get_mut("object")
        .map(Value::take)
        .unwrap_or(Value::Null);
    if let Some(old) = request.get_mut("oldObject") {
        *old = Value::Null;
    }
    let review: AdmissionReview<DynamicObject> =
        serde_json::from_value(doc).map_err(AdmissionError::Malformed)?;
    let req: AdmissionRequest<DynamicObject> =
        review.try_into().map_err(|_| AdmissionError::NoRequest)?;

    let name = if req.name.is_empty() {
        object
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
    } else {
        req.name.as_str()
    };
    let Decision { response, outcome } = decide(&req, &object, values, memo)?;
    let body = encode(response)?;
    Ok(Reviewed {
        name: name.to_owned(),
        uid: req.uid,
        kind: req.kind.kind,
        namespace: req.namespace.unwrap_or_default(),
        operation: req.operation,
        dry_run: req.dry_run,
        outcome,
        body,
    })
}

/// Encodes the response review. kube-core serialises `patch` (Go `[]byte`) as an array of
/// numbers; the API's JSON form is a base64 string (as Go's encoding/json writes `[]byte`), which
/// is what kube-apiserver documents and what keeps the response small and readable.
fn encode(mut response: AdmissionResponse) -> Result<Vec<u8>, AdmissionError> {
    use base64::Engine as _;
    let patch = response.patch.take();
    let mut review = serde_json::to_value(response.into_review())
        .map_err(|e| AdmissionError::Encode(e.to_string()))?;
    if let (Some(patch), Some(Value::Object(r))) = (patch, review.get_mut("response")) {
        let encoded = base64::engine::general_purpose::STANDARD.encode(patch);
        r.insert("patch".to_owned(), Value::String(encoded));
    }
    serde_json::to_vec(&review).map_err(|e| AdmissionError::Encode(e.to_string()))
}

/// The decision for a decoded request. Pure; `dryRun` changes nothing (no side effects here).
fn decide(
    req: &AdmissionRequest<DynamicObject>,
    object: &Value,
    values: &Values,
    memo: &Memo,
) -> Result<Decision, AdmissionError> {
    let allowed = AdmissionResponse::from(req);
    match req.operation {
        Operation::Create | Operation::Update => {}
        _ => return Ok(Decision::new(allowed, Outcome::Skipped("operation"))),
    }
    if req.sub_resource.is_some() {
        // A status or scale update: the object's spec is not what is being written.
        return Ok(Decision::new(allowed, Outcome::Skipped("subresource")));
    }
    if object.is_null() {
        return Ok(Decision::new(allowed, Outcome::Skipped("no object")));
    }
    match mutate_object_with(object, values, memo) {
        Ok(m) => {
            let mut response = allowed;
            if !m.warnings.is_empty() {
                response.warnings = Some(m.warnings);
            }
            if m.target.is_none() {
                Ok(Decision::new(response, Outcome::Skipped("not matched")))
            } else if m.patch.0.is_empty() {
                Ok(Decision::new(response, Outcome::Unchanged))
            } else {
                let response = response
                    .with_patch(m.patch)
                    .map_err(|e| AdmissionError::Encode(e.to_string()))?;
                // The size of the patch as serialised for the response (once, by with_patch).
                let patch_bytes = response.patch.as_ref().map_or(0, Vec::len);
                Ok(Decision::new(response, Outcome::Patched { patch_bytes }))
            }
        }
        Err(e) => Ok(on_rewrite_error(req, allowed, &e, values.on_error)),
    }
}

fn on_rewrite_error(
    req: &AdmissionRequest<DynamicObject>,
    allowed: AdmissionResponse,
    e: &RewriteError,
    on_error: OnError,
) -> Decision {
    let what = describe(&req.kind.kind, req.namespace.as_deref(), Some(&req.name));
    let message = format!("promfed cannot rewrite {what}: {e}");
    match on_error {
        OnError::Deny => {
            let mut denied = allowed;
            denied.allowed = false;
            denied.result = Status::failure(&message, "Forbidden").with_code(403);
            Decision::new(denied, Outcome::Denied)
        }
        OnError::Allow => {
            let mut response = allowed;
            response
                .warnings
                .get_or_insert_with(Vec::new)
                .push(format!("{message}; admitted unmodified (onError: allow)"));
            Decision::new(response, Outcome::AllowedOnError)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn review_json(operation: &str, object: Value) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "apiVersion": API_VERSION,
            "kind": KIND,
            "request": {
                "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
                "kind": {"group": "", "version": "v1", "kind": "ConfigMap"},
                "resource": {"group": "", "version": "v1", "resource": "configmaps"},
                "name": "x", "namespace": "tanzu-system-monitoring",
                "operation": operation,
                "userInfo": {"username": "admin"},
                "object": object, "oldObject": null, "dryRun": false,
            }
        }))
        .unwrap()
    }

    #[test]
    fn rejects_what_is_not_a_v1_review() {
        assert!(matches!(
            review(b"{", &Values::default()),
            Err(AdmissionError::NotJson(_))
        ));
        let wrong =
            br#"{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":{}}"#;
        assert!(matches!(
            review(wrong, &Values::default()),
            Err(AdmissionError::WrongType { .. })
        ));
        let none = br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#;
        assert!(matches!(
            review(none, &Values::default()),
            Err(AdmissionError::NoRequest)
        ));
        let bad =
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":1}}"#;
        assert!(matches!(
            review(bad, &Values::default()),
            Err(AdmissionError::Malformed(_))
        ));
    }

    #[test]
    fn delete_is_allowed_with_same_uid_and_no_patch() {
        let r = review(&review_json("DELETE", Value::Null), &Values::default()).unwrap();
        assert_eq!(r.outcome, Outcome::Skipped("operation"));
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["response"]["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002");
        assert_eq!(v["response"]["allowed"], true);
        assert!(v["response"].get("patch").is_none());
        assert_eq!(v["apiVersion"], API_VERSION);
        assert_eq!(v["kind"], KIND);
    }

    #[test]
    fn same_request_same_bytes() {
        let obj = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "other", "namespace": "n"}, "data": {"a": "b"}});
        let body = review_json("UPDATE", obj);
        let a = review(&body, &Values::default()).unwrap().body;
        let b = review(&body, &Values::default()).unwrap().body;
        assert_eq!(a, b);
    }

    #[test]
    fn patch_is_base64_of_a_json_patch() {
        use base64::Engine as _;
        let obj = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "prometheus-server", "namespace": "n",
                "labels": {"app": "prometheus", "component": "server"}},
            "data": {"prometheus.yml": "scrape_configs:\n- job_name: a\n"}});
        let r = review(&review_json("CREATE", obj), &Values::default()).unwrap();
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["response"]["patchType"], "JSONPatch");
        let encoded = v["response"]["patch"].as_str().expect("a base64 string");
        let raw = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .unwrap();
        let patch: Value = serde_json::from_slice(&raw).unwrap();
        assert_eq!(patch[0]["op"], "replace");
        assert_eq!(patch[0]["path"], "/data/prometheus.yml");
    }

    #[test]
    fn an_answer_from_the_memo_is_the_computed_answer() {
        let obj = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "prometheus-server", "namespace": "n",
            "labels": {"app": "prometheus", "component": "server"}},
        "data": {
            "prometheus.yml": "rule_files: [/etc/config/r.yml]\nscrape_configs:\n- job_name: a\n",
            "recording_rules.yml": "groups:\n- name: g\n  rules:\n  - record: r\n    expr: sum(x)\n",
        }});
        let body = review_json("UPDATE", obj);
        let values = Values::default();
        let memo = Memo::new(1 << 20);
        let computed = review(&body, &values).unwrap().body;
        let first = review_with(&body, &values, &memo).unwrap().body;
        assert!(memo.held_bytes() > 0);
        let remembered = review_with(&body, &values, &memo).unwrap().body;
        assert_eq!(first, computed);
        assert_eq!(remembered, computed);
    }
}
