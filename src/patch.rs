//! JSON patch helpers. Pointers are built from tokens (RFC 6901 escaping), never by formatting.
