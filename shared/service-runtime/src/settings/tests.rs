use std::io::Write;

use super::*;
use crate::telemetry::LogSettings;

/// The sections every service has, as a settings type of its own.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct BaseSettings {
    server: ServerSettings,
    log: LogSettings,
}

const DEFAULTS: &str = r#"
[server]
grpc_addr = "127.0.0.1:50061"
metrics_addr = "127.0.0.1:9061"
drain_timeout_ms = 5000

[log]
format = "pretty"
filter = "info"
"#;

const SOURCE: SettingsSource = SettingsSource {
    defaults: DEFAULTS,
    env_prefix: "TESTSVC",
};

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn defaults_load_alone() {
    let settings: BaseSettings = load_settings_from(SOURCE, None, env(&[])).unwrap();
    assert_eq!(settings.server.grpc_addr.port(), 50061);
    assert_eq!(settings.server.drain_timeout_ms, 5000);
}

#[test]
fn file_overrides_defaults_and_environment_overrides_file() {
    let mut file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    writeln!(
        file,
        "[server]\ngrpc_addr = \"0.0.0.0:1\"\ndrain_timeout_ms = 7"
    )
    .unwrap();
    let settings: BaseSettings = load_settings_from(
        SOURCE,
        Some(file.path()),
        env(&[("TESTSVC_SERVER__DRAIN_TIMEOUT_MS", "9"), ("OTHER_X", "1")]),
    )
    .unwrap();
    assert_eq!(
        settings.server.grpc_addr.port(),
        1,
        "file wins over defaults"
    );
    assert_eq!(
        settings.server.drain_timeout_ms, 9,
        "environment wins over file"
    );
    assert_eq!(
        settings.server.metrics_addr.port(),
        9061,
        "defaults fill the rest"
    );
}

#[test]
fn an_unknown_key_is_named_in_the_error() {
    let error = load_settings_from::<BaseSettings>(
        SOURCE,
        None,
        env(&[("TESTSVC_SERVER__GRPC_ADR", "0.0.0.0:1")]),
    )
    .unwrap_err()
    .to_string();
    assert!(error.contains("grpc_adr"), "{error}");
}

#[test]
fn a_bad_value_is_named_in_the_error() {
    let error = load_settings_from::<BaseSettings>(
        SOURCE,
        None,
        env(&[("TESTSVC_SERVER__DRAIN_TIMEOUT_MS", "soon")]),
    )
    .unwrap_err()
    .to_string();
    assert!(error.contains("drain_timeout_ms"), "{error}");
}

#[test]
fn a_missing_file_is_an_error() {
    let error = load_settings_from::<BaseSettings>(
        SOURCE,
        Some(std::path::Path::new("/nonexistent/settings.toml")),
        env(&[]),
    )
    .unwrap_err()
    .to_string();
    assert!(error.contains("settings.toml"), "{error}");
}

#[test]
fn rendered_settings_load_back() {
    let settings: BaseSettings = load_settings_from(SOURCE, None, env(&[])).unwrap();
    let text = render(&settings);
    let again: BaseSettings = toml::from_str(&text).unwrap();
    assert_eq!(again.server.grpc_addr, settings.server.grpc_addr);
}
