//! AdmissionReview v1 requests built in one place, shaped like kube-apiserver's.

use serde_json::{Value, json};

/// An `admission.k8s.io/v1` AdmissionReview asking about `object`: kind, group, version,
/// resource, name and namespace come from the object itself, as the API server fills them.
/// `operation` is `CREATE`, `UPDATE`, `DELETE` or `CONNECT`; `old_object` is the stored object
/// of an UPDATE or DELETE.
pub fn review(uid: &str, operation: &str, object: &Value, old_object: Option<&Value>) -> Value {
    let s = |p: &str| {
        object
            .pointer(p)
            .or_else(|| old_object.and_then(|o| o.pointer(p)))
            .and_then(Value::as_str)
    };
    let kind = s("/kind").unwrap_or("ConfigMap");
    let (group, version) = match s("/apiVersion").unwrap_or("v1").split_once('/') {
        Some((g, v)) => (g.to_owned(), v.to_owned()),
        None => (String::new(), s("/apiVersion").unwrap_or("v1").to_owned()),
    };
    let gvk = json!({"group": group, "version": version, "kind": kind});
    let resource = json!({
        "group": group,
        "version": version,
        "resource": format!("{}s", kind.to_ascii_lowercase()),
    });
    let options = match operation {
        "CREATE" => "CreateOptions",
        "UPDATE" => "UpdateOptions",
        "DELETE" => "DeleteOptions",
        _ => "ConnectOptions",
    };
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": gvk,
            "resource": resource,
            "requestKind": gvk,
            "requestResource": resource,
            "name": s("/metadata/name").unwrap_or(""),
            "namespace": s("/metadata/namespace"),
            "operation": operation,
            "userInfo": {"username": "kubernetes-admin", "groups": ["system:masters"]},
            "object": if operation == "DELETE" { Value::Null } else { object.clone() },
            "oldObject": old_object.cloned().unwrap_or(Value::Null),
            "dryRun": false,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": options},
        }
    })
}
