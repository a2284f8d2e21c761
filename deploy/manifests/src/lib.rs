//! Nothing to link against: this crate holds one integration test, `tests/manifests.rs`, that
//! reads every Compose file and Kubernetes manifest under `deploy/` and checks it against the
//! binaries' own `defaults.toml` (ports, configuration keys) and health checks, so that a
//! deployment file cannot drift from the code it deploys without a failing `cargo test`.
