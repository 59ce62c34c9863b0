//! The Prometheus server Deployment: mount the federation credentials.
//!
//! The federation jobs point at files (`tls_config.ca_file`, `basic_auth.password_file`, ...).
//! Prometheus 2.42 starts without them, logs one error and never scrapes the job, so the fleet
//! silently goes missing; mounting the Secrets here makes one `helm install` enough.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{KeyToPath, PodSpec, SecretVolumeSource, Volume, VolumeMount};
use serde::Deserialize;
use serde_json::Value;

use super::{Mutation, RewriteError, Target};
use crate::config::{FederationSecret, Values};
use crate::patch;

/// The mode the API server defaults a Secret volume to (0644), so an unset mode equals it.
const DEFAULT_SECRET_MODE: i32 = 0o644;
/// Kubernetes volume names are DNS-1123 labels.
const MAX_VOLUME_NAME: usize = 63;
const VOLUME_PREFIX: &str = "promfed-";

/// True when `object` (any kind) is the configured Prometheus server Deployment.
pub fn matches(dep: &Deployment, values: &Values) -> bool {
    values
        .r#match
        .deployment
        .object()
        .matches(dep.metadata.name.as_deref(), dep.metadata.labels.as_ref())
}

/// The volume name for a Secret: `promfed-<secret>`, dots made dashes, shortened with a stable
/// hash suffix when longer than a DNS-1123 label allows.
pub fn volume_name(secret_name: &str) -> String {
    let name = format!("{VOLUME_PREFIX}{}", secret_name.replace('.', "-"));
    if name.len() <= MAX_VOLUME_NAME {
        return name;
    }
    let hash = fnv1a(secret_name.as_bytes());
    let keep = MAX_VOLUME_NAME - 9;
    format!("{}-{hash:08x}", name[..keep].trim_end_matches('-'))
}

/// FNV-1a, 32 bits: a stable, dependency-free hash for names (not for security).
fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    })
}

fn desired_volume(s: &FederationSecret) -> Volume {
    Volume {
        name: volume_name(&s.secret_name),
        secret: Some(SecretVolumeSource {
            secret_name: Some(s.secret_name.clone()),
            default_mode: s.default_mode,
            items: s.items.as_ref().map(|items| {
                items
                    .iter()
                    .map(|i| KeyToPath {
                        key: i.key.clone(),
                        path: i.path.clone(),
                        mode: i.mode,
                    })
                    .collect()
            }),
            optional: None,
        }),
        ..Volume::default()
    }
}

/// Same Secret volume, allowing for the API server's defaulting (`defaultMode: 420`).
fn same_volume(have: &Volume, want: &Volume) -> bool {
    let strip = |v: &Volume| {
        let mut v = v.clone();
        if let Some(s) = v.secret.as_mut() {
            s.default_mode = Some(s.default_mode.unwrap_or(DEFAULT_SECRET_MODE));
            s.optional = s.optional.filter(|o| *o);
        }
        v
    };
    strip(have) == strip(want)
}

/// Decides the patch for a Deployment object (already known to be `apps/v1` `Deployment`).
pub fn mutate_deployment(object: &Value, values: &Values) -> Result<Mutation, RewriteError> {
    let dep = Deployment::deserialize(object)
        .map_err(|e| RewriteError::Object(format!("not a valid Deployment: {e}")))?;
    if !matches(&dep, values) {
        return Ok(Mutation::default());
    }
    let name = dep.metadata.name.clone().unwrap_or_default();
    let err = |message: String| RewriteError::Deployment {
        name: name.clone(),
        message,
    };
    let mut mutation = Mutation {
        target: Some(Target::Deployment),
        warnings: values.warnings(),
        ..Mutation::default()
    };
    if values.federation_secrets.is_empty() {
        return Ok(mutation);
    }
    let pod: &PodSpec = dep
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .ok_or_else(|| err("has no spec.template.spec".to_owned()))?;
    let want_container = &values.r#match.deployment.container;
    let (ci, container) = pod
        .containers
        .iter()
        .enumerate()
        .find(|(_, c)| &c.name == want_container)
        .ok_or_else(|| {
            let names: Vec<&str> = pod.containers.iter().map(|c| c.name.as_str()).collect();
            err(format!(
                "has no container {want_container:?} (containers: {}); set match.deployment.container",
                names.join(", ")
            ))
        })?;
    let ci = ci.to_string();
    let volumes = pod.volumes.as_deref().unwrap_or_default();
    let mounts = container.volume_mounts.as_deref().unwrap_or_default();
    let mut new_volumes = Vec::new();
    let mut new_mounts = Vec::new();
    for s in &values.federation_secrets {
        let want = desired_volume(s);
        match volumes.iter().find(|v| v.name == want.name) {
            Some(have) if same_volume(have, &want) => {}
            Some(_) => {
                return Err(err(format!(
                    "volume {:?} already exists and is not Secret {:?} as federationSecrets configures",
                    want.name, s.secret_name
                )));
            }
            None => new_volumes.push(want.clone()),
        }
        let mount = VolumeMount {
            name: want.name.clone(),
            mount_path: s.mount_path.clone(),
            read_only: Some(true),
            ..VolumeMount::default()
        };
        match mounts.iter().find(|m| m.mount_path == s.mount_path) {
            Some(have) if have.name == mount.name && have.read_only == Some(true) => {}
            Some(have) => {
                return Err(err(format!(
                    "container {want_container:?} already mounts volume {:?} at {:?}, where federation secret {:?} \
                     should go",
                    have.name, s.mount_path, s.secret_name
                )));
            }
            None => {
                if let Some(other) = mounts.iter().find(|m| m.name == mount.name) {
                    return Err(err(format!(
                        "container {want_container:?} mounts volume {:?} at {:?}, not at {:?} as configured",
                        other.name, other.mount_path, s.mount_path
                    )));
                }
                new_mounts.push(mount);
            }
        }
    }
    let ops = &mut mutation.patch.0;
    append_ops(
        ops,
        &["spec", "template", "spec", "volumes"],
        pod.volumes.is_none(),
        &new_volumes,
    )
    .map_err(|e| err(format!("cannot serialise: {e}")))?;
    let mounts_path = [
        "spec",
        "template",
        "spec",
        "containers",
        ci.as_str(),
        "volumeMounts",
    ];
    append_ops(
        ops,
        &mounts_path,
        container.volume_mounts.is_none(),
        &new_mounts,
    )
    .map_err(|e| err(format!("cannot serialise: {e}")))?;
    Ok(mutation)
}

/// Appends `items` to the array at `path`: one `add` of the whole array when it does not exist
/// yet, else one `add .../-` per item.
fn append_ops<T: serde::Serialize>(
    ops: &mut Vec<json_patch::PatchOperation>,
    path: &[&str],
    missing: bool,
    items: &[T],
) -> Result<(), serde_json::Error> {
    if items.is_empty() {
        return Ok(());
    }
    if missing {
        ops.push(patch::add(
            path.iter().copied(),
            serde_json::to_value(items)?,
        ));
        return Ok(());
    }
    for item in items {
        ops.push(patch::add(
            path.iter().copied().chain(["-"]),
            serde_json::to_value(item)?,
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn values() -> Values {
        Values::from_yaml_str(
            "federationSecrets:\n- secretName: prometheus-federation\n  mountPath: /etc/prometheus/addCerts/federation\n",
        )
        .unwrap()
    }

    fn deployment() -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "prometheus-server", "namespace": "m", "labels": {"app": "prometheus", "component": "server"}},
            "spec": {"selector": {"matchLabels": {"app": "prometheus"}}, "template": {"metadata": {"labels": {"app": "prometheus"}}, "spec": {
                "containers": [
                    {"name": "configmap-reload", "image": "r", "volumeMounts": [{"name": "config-volume", "mountPath": "/etc/config", "readOnly": true}]},
                    {"name": "prometheus-server", "image": "p", "volumeMounts": [{"name": "config-volume", "mountPath": "/etc/config"}]}
                ],
                "volumes": [{"name": "config-volume", "configMap": {"name": "prometheus-server"}}]
            }}}
        })
    }

    fn apply(obj: &Value, v: &Values) -> (Value, Mutation) {
        let m = mutate_deployment(obj, v).unwrap();
        let mut out = obj.clone();
        json_patch::patch(&mut out, &m.patch.0).unwrap();
        (out, m)
    }

    #[test]
    fn adds_volume_and_read_only_mount_once() {
        let (out, m) = apply(&deployment(), &values());
        assert_eq!(m.patch.0.len(), 2);
        let spec = &out["spec"]["template"]["spec"];
        assert_eq!(
            spec["volumes"][1],
            json!({"name": "promfed-prometheus-federation", "secret": {"secretName": "prometheus-federation"}})
        );
        assert_eq!(
            spec["containers"][1]["volumeMounts"][1],
            json!({"mountPath": "/etc/prometheus/addCerts/federation", "name": "promfed-prometheus-federation", "readOnly": true})
        );
        assert_eq!(
            spec["containers"][0],
            deployment()["spec"]["template"]["spec"]["containers"][0],
            "other containers untouched"
        );
        let (again, m2) = apply(&out, &values());
        assert!(m2.patch.0.is_empty(), "idempotent: {:?}", m2.patch);
        assert_eq!(again, out);
    }

    #[test]
    fn api_server_defaulting_is_not_a_conflict() {
        let (mut out, _) = apply(&deployment(), &values());
        out["spec"]["template"]["spec"]["volumes"][1]["secret"]["defaultMode"] = json!(420);
        assert!(
            mutate_deployment(&out, &values())
                .unwrap()
                .patch
                .0
                .is_empty()
        );
    }

    #[test]
    fn missing_arrays_are_created() {
        let mut d = deployment();
        d["spec"]["template"]["spec"]
            .as_object_mut()
            .unwrap()
            .remove("volumes");
        d["spec"]["template"]["spec"]["containers"][1]
            .as_object_mut()
            .unwrap()
            .remove("volumeMounts");
        let (out, m) = apply(&d, &values());
        assert_eq!(
            serde_json::to_value(&m.patch).unwrap()[0]["path"],
            json!("/spec/template/spec/volumes")
        );
        assert_eq!(
            out["spec"]["template"]["spec"]["volumes"]
                .as_array()
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn conflicts_are_named() {
        let e = |d: &Value, v: &Values| mutate_deployment(d, v).unwrap_err().to_string();
        let v = Values::from_yaml_str("match:\n  deployment: {container: prom}\nfederationSecrets:\n- {secretName: s, mountPath: /x}\n").unwrap();
        let msg = e(&deployment(), &v);
        assert!(
            msg.contains("no container \"prom\"")
                && msg.contains("configmap-reload, prometheus-server"),
            "{msg}"
        );
        let mut d = deployment();
        d["spec"]["template"]["spec"]["volumes"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "promfed-prometheus-federation", "emptyDir": {}}));
        assert!(
            e(&d, &values()).contains("already exists"),
            "{}",
            e(&d, &values())
        );
        let mut d = deployment();
        d["spec"]["template"]["spec"]["containers"][1]["volumeMounts"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "certs", "mountPath": "/etc/prometheus/addCerts/federation"}));
        assert!(e(&d, &values()).contains("already mounts volume \"certs\""));
    }

    #[test]
    fn non_matching_deployment_passes() {
        let mut d = deployment();
        d["metadata"]["name"] = json!("grafana");
        assert_eq!(
            mutate_deployment(&d, &values()).unwrap(),
            Mutation::default()
        );
    }

    #[test]
    fn volume_names_are_valid_and_stable() {
        assert_eq!(volume_name("fed.certs"), "promfed-fed-certs");
        let long = "a".repeat(200);
        let n = volume_name(&long);
        assert!(
            n.len() <= 63 && n == volume_name(&long) && n != volume_name(&"a".repeat(199)),
            "{n}"
        );
    }
}
