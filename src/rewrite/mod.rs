//! The rewrite engine: pure functions from a Kubernetes object and the [`Values`] to the
//! JSON patch that turns it into its federated form (the ConfigMap's rewritten keys, or the
//! Deployment's federation secret mounts). No I/O, no globals: the webhook
//! ([`crate::admission`]) and `promfed mutate` ([`crate::cli`]) share it. The server's
//! [`Memo`] of past results is handed in explicitly ([`mutate_object_with`]).

use crate::config::Values;
use crate::yaml::tree::{Kind, NodeId, Tree};
pub use memo::Memo;

pub(crate) mod checks;
pub mod configmap;
pub mod deployment;
pub mod fleet;
pub(crate) mod health;
pub mod memo;
pub mod rules;
pub mod scrape;

/// kube-apiserver refuses a ConfigMap whose `data` and `binaryData` (keys and values) add up to
/// more than this; a patch that crosses it would fail with an error that does not name promfed.
pub const MAX_CONFIGMAP_BYTES: usize = 1024 * 1024;

/// Largest data value we parse. A ConfigMap is capped at 1 MiB by the API server; anything
/// bigger did not come from it.
pub const MAX_DOCUMENT_BYTES: usize = 2 * 1024 * 1024;

/// Which kind of object a mutation was decided for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The Prometheus server ConfigMap (`prometheus.yml` and rule files).
    ConfigMap,
    /// The Prometheus server Deployment (federation secret mounts).
    Deployment,
}

/// What promfed decided for one object.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Mutation {
    /// `None` when the object is not one promfed rewrites (it passes through untouched).
    pub target: Option<Target>,
    /// Minimal RFC 6902 patch; empty when the object is already in its federated form.
    pub patch: json_patch::Patch,
    /// Non-fatal findings a user can act on.
    pub warnings: Vec<String>,
}

/// Why a matching object could not be rewritten. The message names the place.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum RewriteError {
    /// A data key does not hold a YAML document of the expected shape.
    #[error("data key {key:?}: {source}")]
    Document {
        /// The ConfigMap data key.
        key: String,
        /// What is wrong with it.
        #[source]
        source: Box<DocumentError>,
    },
    /// A rule cannot be rewritten.
    #[error("data key {key:?}, group {group:?}, rule {rule:?}: {source}")]
    Rule {
        /// The ConfigMap data key.
        key: String,
        /// The group's name (or `groups[i]`).
        group: String,
        /// The rule's `record`/`alert` name (or `rules[i]`).
        rule: String,
        /// What is wrong with it.
        #[source]
        source: Box<RuleError>,
    },
    /// A scrape config of `prometheus.yml` cannot be labelled, or clashes with a federation job.
    #[error("data key {key:?}, scrape config {job:?}: {source}")]
    Scrape {
        /// The ConfigMap data key.
        key: String,
        /// The scrape config's `job_name` (or `scrape_configs[i]`).
        job: String,
        /// What is wrong with it.
        #[source]
        source: Box<ScrapeError>,
    },
    /// The object itself is malformed (e.g. `data` is not a string map).
    #[error("{0}")]
    Object(String),
    /// The Deployment cannot take the federation secret mounts.
    #[error("deployment {name}: {message}")]
    Deployment {
        /// The Deployment's name.
        name: String,
        /// What is wrong with it.
        message: String,
    },
}

/// A document-level problem: size, syntax, shape, or edits that cannot be combined.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DocumentError {
    /// Larger than any ConfigMap value can be.
    #[error("document is {size} bytes, more than the limit of {limit}")]
    TooLarge {
        /// The document's size in bytes.
        size: usize,
        /// [`MAX_DOCUMENT_BYTES`].
        limit: usize,
    },
    /// Not YAML (or over the YAML limits).
    #[error(transparent)]
    Syntax(#[from] crate::yaml::tree::SyntaxError),
    /// A node of the wrong kind, e.g. `groups` that is not a list.
    #[error(transparent)]
    Shape(#[from] Shape),
    /// A node shared through an anchor needs two different changes.
    #[error("cannot edit: {0}")]
    Overlap(#[from] crate::yaml::edit::OverlapError),
}

/// A node of the wrong kind: `at` must be `expected`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{at} must be {expected}, found {found}")]
pub struct Shape {
    /// Where, e.g. `groups[2]` or `relabel_configs`.
    pub at: String,
    /// What it must be, e.g. `a list`.
    pub expected: &'static str,
    /// What it is.
    pub found: &'static str,
}

/// Why one rule cannot be rewritten.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RuleError {
    /// The expression does not parse or cannot be rewritten faithfully.
    #[error("expression {0}")]
    Expr(#[source] crate::promql::PromqlError),
    /// No `expr` at all.
    #[error("has no expr")]
    NoExpr,
    /// A field of the wrong kind.
    #[error(transparent)]
    Shape(#[from] Shape),
}

/// Why one scrape config cannot be handled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ScrapeError {
    /// A field of the wrong kind.
    #[error(transparent)]
    Shape(#[from] Shape),
    /// A federation job's `job_name` is used twice in `scrape_configs`.
    #[error("federation job {job:?} appears twice (scrape_configs[{first}] and [{second}])")]
    FederationTwice {
        /// The job name.
        job: String,
        /// Index of its first occurrence.
        first: usize,
        /// Index of its second occurrence.
        second: usize,
    },
    /// A local scrape config has the `job_name` of a federation job: replacing it would drop
    /// a local job, so promfed refuses.
    #[error(
        "scrape_configs[{local}] is a local job with the job_name of federation job \
         additionalScrapeConfigs[{federation}] ({job:?}); it is not promfed's output (no \
         `{marker}` comment above it and not equal to the configured job), so promfed will not \
         replace it: rename one of the two"
    )]
    Collision {
        /// The shared job name.
        job: String,
        /// Index in `scrape_configs`.
        local: usize,
        /// Index in `additionalScrapeConfigs`.
        federation: usize,
        /// The marker comment promfed writes above its federation jobs.
        marker: &'static str,
    },
}

/// The result of rewriting one text document: `text` is `None` when nothing changes (the input
/// is then kept byte for byte, which is what makes the rewrite idempotent).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Edit {
    /// The new text, `None` when the input stays as it is.
    pub text: Option<String>,
    /// Non-fatal findings, each naming its place.
    pub warnings: Vec<String>,
}

impl Edit {
    fn unchanged(warnings: Vec<String>) -> Self {
        Self {
            text: None,
            warnings,
        }
    }
}

/// Parses the first YAML document of `text` into a span tree, with the size limit applied first.
fn parse_tree(text: &str) -> Result<Tree<'_>, DocumentError> {
    if text.len() > MAX_DOCUMENT_BYTES {
        return Err(DocumentError::TooLarge {
            size: text.len(),
            limit: MAX_DOCUMENT_BYTES,
        });
    }
    Ok(Tree::parse(text)?)
}

/// A short description of a node's kind, for messages.
fn describe(tree: &Tree, id: NodeId) -> &'static str {
    match &tree.node(id).kind {
        Kind::Map(_) => "a mapping",
        Kind::Seq(_) => "a list",
        _ if tree.is_null(id) => "null",
        _ => "a scalar",
    }
}

/// `Err(Shape)` unless `id` is a mapping (after following an alias).
fn expect_map(tree: &Tree, id: NodeId, at: impl FnOnce() -> String) -> Result<(), Shape> {
    match tree.map(id) {
        Some(_) => Ok(()),
        None => Err(Shape {
            at: at(),
            expected: "a mapping",
            found: describe(tree, id),
        }),
    }
}

/// The items of a list, `None` for null, `Err(Shape)` for anything else.
fn list_or_null<'t>(
    tree: &'t Tree,
    id: NodeId,
    at: impl FnOnce() -> String,
) -> Result<Option<&'t [NodeId]>, Shape> {
    if tree.is_null(id) {
        return Ok(None);
    }
    tree.seq(id).map(Some).ok_or_else(|| Shape {
        at: at(),
        expected: "a list",
        found: describe(tree, id),
    })
}

/// Decides the mutation of one Kubernetes object given as JSON (as in an AdmissionReview).
/// Objects that are not the configured Prometheus server ConfigMap pass with no patch.
pub fn mutate_object(
    object: &serde_json::Value,
    values: &Values,
) -> Result<Mutation, RewriteError> {
    mutate_object_with(object, values, &Memo::off())
}

/// [`mutate_object`], answering data keys seen before from `memo` (which must belong to
/// `values`: see [`memo`]).
pub fn mutate_object_with(
    object: &serde_json::Value,
    values: &Values,
    memo: &Memo,
) -> Result<Mutation, RewriteError> {
    let api_version = object.get("apiVersion").and_then(serde_json::Value::as_str);
    let kind = object.get("kind").and_then(serde_json::Value::as_str);
    match (api_version, kind) {
        (Some("v1"), Some("ConfigMap")) => configmap::mutate_configmap(object, values, memo),
        (Some("apps/v1"), Some("Deployment")) => deployment::mutate_deployment(object, values),
        _ => Ok(Mutation::default()),
    }
}
