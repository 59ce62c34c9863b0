//! How messages name a Kubernetes object: `Kind namespace/name`, as kubectl does. One helper, so
//! the webhook's denials and `promfed mutate`'s errors name objects the same way.

/// `Kind namespace/name`, `Kind name` for cluster-scoped (or namespace-less) objects, `Kind`
/// alone when the name is not known yet (a `generateName` create). Empty strings count as absent.
pub fn describe(kind: &str, namespace: Option<&str>, name: Option<&str>) -> String {
    let namespace = namespace.filter(|s| !s.is_empty());
    match (namespace, name.filter(|s| !s.is_empty())) {
        (Some(ns), Some(name)) => format!("{kind} {ns}/{name}"),
        (None, Some(name)) => format!("{kind} {name}"),
        _ => kind.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::describe;

    #[test]
    fn names_like_kubectl() {
        assert_eq!(
            describe("ConfigMap", Some("monitoring"), Some("prometheus-server")),
            "ConfigMap monitoring/prometheus-server"
        );
        assert_eq!(describe("Namespace", None, Some("x")), "Namespace x");
        assert_eq!(describe("ConfigMap", Some(""), Some("x")), "ConfigMap x");
        assert_eq!(describe("ConfigMap", Some("ns"), Some("")), "ConfigMap");
        assert_eq!(describe("ConfigMap", Some("ns"), None), "ConfigMap");
    }
}
