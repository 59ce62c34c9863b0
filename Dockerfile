# syntax=docker/dockerfile:1
# promfed: multi-stage build. The dependency layer is built from the manifests alone (with
# dummy targets), so a source edit does not rebuild the crates. rustls with ring: no OpenSSL at
# build or run time; the final image is distroless (glibc and libgcc only), non-root UID 65532.

FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
# Dummy targets matching Cargo.toml (the lib, the binary, every [[bench]]) to cache dependencies.
RUN mkdir -p src benches \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && for b in $(grep -A1 '^\[\[bench\]\]' Cargo.toml | sed -n 's/^name = "\(.*\)"/\1/p'); do \
         echo 'fn main() {}' > "benches/$b.rs"; done \
    && cargo build --release --locked \
    && rm -rf src benches target/release/promfed target/release/deps/promfed-* \
       target/release/deps/libpromfed-* target/release/.fingerprint/promfed-*
COPY src ./src
COPY benches ./benches
# src/cli embeds the TKG example ConfigMap and values with include_str!.
COPY examples ./examples
RUN cargo build --release --locked --bin promfed \
    && cp target/release/promfed /promfed

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /promfed /promfed
USER 65532:65532
EXPOSE 8443 8080
ENTRYPOINT ["/promfed"]
CMD ["serve"]
