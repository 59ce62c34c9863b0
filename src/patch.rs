//! JSON patch helpers. Pointers are built from tokens (RFC 6901 escaping of `~` and `/`),
//! never by string formatting: ConfigMap data keys may contain either.

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, PatchOperation, ReplaceOperation};
use serde_json::Value;

/// A pointer from unescaped tokens, e.g. `["data", "a/b"]` -> `/data/a~1b`.
pub fn pointer<'a>(tokens: impl IntoIterator<Item = &'a str>) -> PointerBuf {
    PointerBuf::from_tokens(tokens)
}

/// `replace` at the given tokens.
pub fn replace<'a>(tokens: impl IntoIterator<Item = &'a str>, value: Value) -> PatchOperation {
    PatchOperation::Replace(ReplaceOperation {
        path: pointer(tokens),
        value,
    })
}

/// `add` at the given tokens (`-` appends to an array).
pub fn add<'a>(tokens: impl IntoIterator<Item = &'a str>, value: Value) -> PatchOperation {
    PatchOperation::Add(AddOperation {
        path: pointer(tokens),
        value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_escaped() {
        assert_eq!(pointer(["data", "a/b~c"]).as_str(), "/data/a~1b~0c");
        let op = replace(["data", "prometheus.yml"], Value::from("x"));
        let json = serde_json::to_string(&op).unwrap();
        assert_eq!(
            json,
            r#"{"op":"replace","path":"/data/prometheus.yml","value":"x"}"#
        );
    }
}
