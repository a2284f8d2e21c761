//! Every Compose file and Kubernetes manifest under `deploy/` agrees with the binaries it runs.
//!
//! The binaries are described by their own `defaults.toml` (which documents every settings key
//! and holds the gRPC and metrics addresses) and by the environment prefix in their `lib.rs`.
//! For each service or container the binary is found from its image name
//! (`domain-gateways/<binary>`), or, in a patch without an image, from the container or service
//! name. Then:
//!
//! - every environment variable (Compose `environment`, Kubernetes `env` and the data of the
//!   ConfigMaps containers read through `envFrom`) carries the binary's prefix and names a real
//!   key, because an unknown key stops the binary at start-up;
//! - every container port, Service port, probe port, Compose port mapping and NetworkPolicy port
//!   is the binary's gRPC or metrics port (after a `SERVER__GRPC_ADDR` override, if any);
//! - health checks and probes ask grpc.health.v1: `/app/service health` or a native gRPC probe
//!   on the gRPC port;
//! - Kubernetes workloads keep their probes, resources and non-root, read-only security context,
//!   NetworkPolicies admit gRPC only from BFFs of a named namespace (gateways) or from each
//!   gateway in the namespace its kustomizations deploy it to and the relays (foundation), and
//!   metrics only from the monitoring namespace, no Secret is committed, and kustomizations
//!   refer to files that exist and to known images;
//! - the Compose topology publishes only the gateways' ports on the host, and the foundation's
//!   only with `deploy/compose.debug-ports.yaml`, on loopback.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
    path::{Path, PathBuf},
};

use serde::Deserialize;
use serde_yaml_ng::Value;

/// The binaries: name (= image name and container name), environment prefix, crate folder.
const BINARIES: &[(&str, &str, &str)] = &[
    ("tracks", "TRACKS", "foundation-stubs/tracks"),
    ("likes", "LIKES", "foundation-stubs/likes"),
    ("follows", "FOLLOWS", "foundation-stubs/follows"),
    ("counts", "COUNTS", "foundation-stubs/counts"),
    (
        "consumer-gateway",
        "CONSUMER_GATEWAY",
        "gateways/consumer-gateway",
    ),
    (
        "creator-gateway",
        "CREATOR_GATEWAY",
        "gateways/creator-gateway",
    ),
];

/// The gateways; every other binary is a foundation service.
const GATEWAYS: &[&str] = &["consumer-gateway", "creator-gateway"];

/// The foundation services whose outbox relays call counts.
const RELAYS: &[&str] = &["tracks", "likes", "follows"];

/// The image path every binary's image has, before the binary's name.
const IMAGE_NAMESPACE: &str = "domain-gateways";

/// The shell-less health check every image carries.
const HEALTH_COMMAND: [&str; 2] = ["/app/service", "health"];

/// The fields of one `[faults.<Method>]` table (`service_runtime::faults::MethodFault`); the
/// method names are free-form.
const FAULT_FIELDS: [&str; 3] = ["latency_ms", "error_rate", "code"];

/// What the repository says about one binary.
#[derive(Debug)]
struct Binary {
    name: &'static str,
    prefix: &'static str,
    defaults_path: String,
    defaults: toml::Table,
    grpc_port: u16,
    metrics_port: u16,
}

impl Binary {
    fn is_gateway(&self) -> bool {
        GATEWAYS.contains(&self.name)
    }

    /// Whether `key` (an environment variable name) sets a real key of this binary's settings.
    fn check_env_key(&self, key: &str) -> Result<(), String> {
        let rest = key
            .strip_prefix(self.prefix)
            .and_then(|rest| rest.strip_prefix('_'))
            .ok_or_else(|| format!("{key} lacks the prefix {}_ of {}", self.prefix, self.name))?;
        let path: Vec<String> = rest.split("__").map(str::to_lowercase).collect();
        let dotted = path.join(".");
        if path[0] == "faults" && self.defaults.contains_key("faults") {
            return match path.as_slice() {
                [_, method, field]
                    if !method.is_empty() && FAULT_FIELDS.contains(&field.as_str()) =>
                {
                    Ok(())
                }
                _ => Err(format!(
                    "{key}: {dotted} is not faults.<Method>.<{}>",
                    FAULT_FIELDS.join("|")
                )),
            };
        }
        let mut table = &self.defaults;
        for (depth, part) in path.iter().enumerate() {
            let last = depth + 1 == path.len();
            match table.get(part) {
                Some(toml::Value::Table(inner)) if !last => table = inner,
                Some(toml::Value::Table(_)) => {
                    return Err(format!("{key}: {dotted} is a table, not a key"));
                }
                Some(_) if last => return Ok(()),
                _ => break,
            }
        }
        Err(format!(
            "{key}: {dotted} is not a key of {}",
            self.defaults_path
        ))
    }

    /// The gRPC port after an override of `server.grpc_addr` among `env`, if any.
    fn effective_grpc_port(&self, env: &BTreeMap<String, Option<String>>) -> Result<u16, String> {
        let key = format!("{}_SERVER__GRPC_ADDR", self.prefix);
        match env.get(&key) {
            None => Ok(self.grpc_port),
            Some(Some(value)) => value
                .parse::<SocketAddr>()
                .map(|addr| addr.port())
                .map_err(|_| format!("{key} must be a literal socket address, not {value:?}")),
            Some(None) => Err(format!("{key} must be a literal socket address")),
        }
    }

    fn effective_metrics_port(
        &self,
        env: &BTreeMap<String, Option<String>>,
    ) -> Result<u16, String> {
        let key = format!("{}_SERVER__METRICS_ADDR", self.prefix);
        match env.get(&key) {
            None => Ok(self.metrics_port),
            Some(Some(value)) => value
                .parse::<SocketAddr>()
                .map(|addr| addr.port())
                .map_err(|_| format!("{key} must be a literal socket address, not {value:?}")),
            Some(None) => Err(format!("{key} must be a literal socket address")),
        }
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn port_of(defaults: &toml::Table, key: &str, path: &str) -> u16 {
    let addr = defaults
        .get("server")
        .and_then(|server| server.get(key))
        .and_then(toml::Value::as_str)
        .unwrap_or_else(|| panic!("{path} has no server.{key}"));
    addr.parse::<SocketAddr>()
        .unwrap_or_else(|error| panic!("{path}: server.{key} = {addr:?}: {error}"))
        .port()
}

/// Reads every binary's `defaults.toml` and checks its prefix against its `lib.rs`.
fn binaries() -> BTreeMap<&'static str, Binary> {
    let root = root();
    BINARIES
        .iter()
        .map(|&(name, prefix, folder)| {
            let defaults_path = format!("{folder}/defaults.toml");
            let text = std::fs::read_to_string(root.join(&defaults_path))
                .unwrap_or_else(|error| panic!("{defaults_path}: {error}"));
            let defaults: toml::Table = text
                .parse()
                .unwrap_or_else(|error| panic!("{defaults_path}: {error}"));
            let lib = std::fs::read_to_string(root.join(folder).join("src/lib.rs")).unwrap();
            assert!(
                lib.contains(&format!("env_prefix: \"{prefix}\"")),
                "{folder}/src/lib.rs does not use the environment prefix {prefix}"
            );
            let binary = Binary {
                name,
                prefix,
                grpc_port: port_of(&defaults, "grpc_addr", &defaults_path),
                metrics_port: port_of(&defaults, "metrics_addr", &defaults_path),
                defaults_path,
                defaults,
            };
            (name, binary)
        })
        .collect()
}

/// Every `.yaml` and `.yml` file under `deploy/`, as (path relative to the root, text).
fn deploy_files() -> Vec<(String, String)> {
    fn walk(dir: &Path, root: &Path, out: &mut Vec<(String, String)>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .collect();
        entries.sort();
        for path in entries {
            if path.is_dir() {
                walk(&path, root, out);
            } else if matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml")
            ) {
                let relative = path
                    .strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                out.push((relative, std::fs::read_to_string(&path).unwrap()));
            }
        }
    }
    let root = root();
    let mut files = Vec::new();
    walk(&root.join("deploy"), &root, &mut files);
    files
}

/// Parses every document of a YAML stream, resolving `<<` merge keys; empty documents are
/// left out.
fn documents(text: &str) -> Result<Vec<Value>, String> {
    let mut values = Vec::new();
    for document in serde_yaml_ng::Deserializer::from_str(text) {
        let mut value = Value::deserialize(document).map_err(|error| error.to_string())?;
        value.apply_merge().map_err(|error| error.to_string())?;
        if !value.is_null() {
            values.push(value);
        }
    }
    Ok(values)
}

fn str_of<'a>(value: &'a Value, key: &str) -> Option<&'a str> {
    value.get(key).and_then(Value::as_str)
}

fn seq_of<'a>(value: &'a Value, key: &str) -> &'a [Value] {
    value
        .get(key)
        .and_then(Value::as_sequence)
        .map_or(&[], Vec::as_slice)
}

/// A scalar as text (ports and env values may be numbers or strings).
fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        Value::Bool(flag) => Some(flag.to_string()),
        _ => None,
    }
}

/// Everything the checks find wrong, each line naming its file.
#[derive(Debug, Default)]
struct Report {
    problems: Vec<String>,
    /// (kind, binary) pairs seen in complete (non-patch) objects, for the coverage check.
    seen: BTreeSet<(String, String)>,
}

impl Report {
    fn problem(&mut self, file: &str, what: impl std::fmt::Display) {
        self.problems.push(format!("{file}: {what}"));
    }
}

/// The binary an image runs: `Ok(None)` for an image that is not one of ours.
fn image_binary<'b>(
    binaries: &'b BTreeMap<&'static str, Binary>,
    image: &str,
) -> Result<Option<&'b Binary>, String> {
    let last_slash = image.rfind('/').unwrap_or(0);
    let path = match image[last_slash..].find(':') {
        Some(colon) => &image[..last_slash + colon],
        None => image,
    };
    let mut segments = path.rsplit('/');
    let name = segments.next().unwrap_or_default();
    if segments.next() != Some(IMAGE_NAMESPACE) {
        return Ok(None);
    }
    binaries
        .get(name)
        .map(Some)
        .ok_or_else(|| format!("image {image} names no known binary"))
}

/// Checks every file; `files` are (path relative to the repository root, text).
fn check(binaries: &BTreeMap<&'static str, Binary>, files: &[(String, String)]) -> Report {
    let mut report = Report::default();
    let mut compose = Vec::new();
    let mut objects = Vec::new();
    for (path, text) in files {
        let docs = match documents(text) {
            Ok(docs) => docs,
            Err(error) => {
                report.problem(path, format!("not YAML: {error}"));
                continue;
            }
        };
        for doc in docs {
            if doc.get("kind").is_some() {
                objects.push((path.as_str(), doc));
            } else if doc.get("services").is_some() {
                compose.push((path.as_str(), doc));
            } else if doc.get("static_resources").is_some() {
                // An Envoy configuration (deploy/envoy/): `envoy --mode validate` checks it
                // when the scaled topology starts.
            } else {
                report.problem(path, "neither a Compose file nor a Kubernetes object");
            }
        }
    }
    for (path, doc) in &compose {
        check_compose(binaries, &mut report, path, doc);
    }
    check_kubernetes(binaries, &mut report, &objects);
    report
}

fn compose_env(service: &Value) -> BTreeMap<String, Option<String>> {
    let mut env = BTreeMap::new();
    match service.get("environment") {
        Some(Value::Mapping(map)) => {
            for (key, value) in map {
                if let Some(key) = key.as_str() {
                    let value = scalar(value).filter(|value| !value.contains('$'));
                    env.insert(key.to_owned(), value);
                }
            }
        }
        Some(Value::Sequence(items)) => {
            for item in items.iter().filter_map(Value::as_str) {
                let (key, value) = match item.split_once('=') {
                    Some((key, value)) => (key, Some(value.to_owned())),
                    None => (item, None),
                };
                let value = value.filter(|value| !value.contains('$'));
                env.insert(key.to_owned(), value);
            }
        }
        _ => {}
    }
    env
}

/// The container side of a Compose port mapping (`"8080:80"`, `"${P:-80}:80/tcp"`, `80`, or the
/// long form with `target`).
fn compose_container_port(entry: &Value) -> Option<u16> {
    match entry {
        Value::Mapping(_) => entry.get("target").and_then(scalar)?.parse().ok(),
        other => {
            let text = scalar(other)?;
            let text = text.split('/').next().unwrap_or_default();
            let container = text.rsplit_once(':').map_or(text, |(_, port)| port);
            container.parse().ok()
        }
    }
}

/// The `--addr` a health command names, if any.
fn health_addr_port(args: &[&str]) -> Option<Option<u16>> {
    let position = args.iter().position(|arg| arg.starts_with("--addr"))?;
    let value = match args[position].split_once('=') {
        Some((_, value)) => Some(value),
        None => args.get(position + 1).copied(),
    };
    Some(value.and_then(|value| value.parse::<SocketAddr>().ok().map(|addr| addr.port())))
}

/// Whether a command is the health check, and, if it names an address, whether its port is
/// `grpc_port`.
fn check_health_command(command: &[&str], grpc_port: u16) -> Result<(), String> {
    if command.len() < 2 || command[..2] != HEALTH_COMMAND {
        return Err(format!(
            "health check {command:?} is not `{}`",
            HEALTH_COMMAND.join(" ")
        ));
    }
    match health_addr_port(&command[2..]) {
        None => Ok(()),
        Some(Some(port)) if port == grpc_port => Ok(()),
        Some(_) => Err(format!(
            "health check {command:?} does not ask the gRPC port {grpc_port}"
        )),
    }
}

fn check_compose(
    binaries: &BTreeMap<&'static str, Binary>,
    report: &mut Report,
    path: &str,
    doc: &Value,
) {
    let Some(services) = doc.get("services").and_then(Value::as_mapping) else {
        report.problem(path, "`services` is not a mapping");
        return;
    };
    for (name, service) in services {
        let name = name.as_str().unwrap_or_default();
        let image = str_of(service, "image");
        let binary = match image {
            Some(image) => match image_binary(binaries, image) {
                Ok(Some(binary)) => binary,
                // A service of another kind, such as a database server.
                Ok(None) => continue,
                Err(error) => {
                    report.problem(path, format!("service {name}: {error}"));
                    continue;
                }
            },
            // An override of a service defined in another file.
            None => match binaries.get(name) {
                Some(binary) => binary,
                None => {
                    report.problem(
                        path,
                        format!("service {name} has no image and is no known binary"),
                    );
                    continue;
                }
            },
        };
        let at = format!("service {name} ({})", binary.name);
        if let Some(arg) = service
            .get("build")
            .and_then(|build| build.get("args"))
            .and_then(|args| str_of(args, "BINARY"))
            && arg != binary.name
        {
            report.problem(path, format!("{at}: builds BINARY={arg}"));
        }
        let env = compose_env(service);
        for key in env.keys() {
            if let Err(error) = binary.check_env_key(key) {
                report.problem(path, format!("{at}: {error}"));
            }
        }
        let ports = match (
            binary.effective_grpc_port(&env),
            binary.effective_metrics_port(&env),
        ) {
            (Ok(grpc), Ok(metrics)) => [grpc, metrics],
            (Err(error), _) | (_, Err(error)) => {
                report.problem(path, format!("{at}: {error}"));
                continue;
            }
        };
        for entry in seq_of(service, "ports")
            .iter()
            .chain(seq_of(service, "expose"))
        {
            match compose_container_port(entry) {
                Some(port) if ports.contains(&port) => {}
                _ => report.problem(
                    path,
                    format!(
                        "{at}: port {entry:?} is neither the gRPC port {} nor the metrics port {}",
                        ports[0], ports[1]
                    ),
                ),
            }
        }
        match service.get("healthcheck") {
            Some(check) => {
                if check.get("disable").and_then(Value::as_bool) == Some(true) {
                    report.problem(path, format!("{at}: health check disabled"));
                }
                let test: Vec<&str> = seq_of(check, "test")
                    .iter()
                    .filter_map(Value::as_str)
                    .collect();
                if test.first() != Some(&"CMD") {
                    report.problem(path, format!("{at}: health check must be [\"CMD\", ...]"));
                } else if let Err(error) = check_health_command(&test[1..], ports[0]) {
                    report.problem(path, format!("{at}: {error}"));
                }
            }
            None if image.is_some() => {
                report.problem(path, format!("{at}: no health check"));
            }
            None => {}
        }
        if image.is_some() {
            report
                .seen
                .insert(("compose".to_owned(), binary.name.to_owned()));
        }
    }
}

/// The binary a Kubernetes object is about, from the `app.kubernetes.io/name` label of its
/// selector, or its name.
fn labelled_binary<'b>(
    binaries: &'b BTreeMap<&'static str, Binary>,
    labels: Option<&Value>,
    name: &str,
) -> Option<&'b Binary> {
    labels
        .and_then(|labels| str_of(labels, "app.kubernetes.io/name"))
        .or(Some(name))
        .and_then(|name| binaries.get(name))
}

fn check_kubernetes(
    binaries: &BTreeMap<&'static str, Binary>,
    report: &mut Report,
    objects: &[(&str, Value)],
) {
    // First the workloads, to learn which ConfigMaps feed which binary.
    let mut config_maps: BTreeMap<String, &Binary> = BTreeMap::new();
    let mut config_data: BTreeMap<String, BTreeMap<String, Option<String>>> = BTreeMap::new();
    for (_, object) in objects {
        if str_of(object, "kind") == Some("ConfigMap") {
            let name = object
                .get("metadata")
                .and_then(|m| str_of(m, "name"))
                .unwrap_or_default();
            let data = config_data.entry(name.to_owned()).or_default();
            if let Some(map) = object.get("data").and_then(Value::as_mapping) {
                for (key, value) in map {
                    if let Some(key) = key.as_str() {
                        data.insert(key.to_owned(), scalar(value));
                    }
                }
            }
        }
    }
    let namespaces = deployed_namespaces(binaries, objects);
    let mut deployments = BTreeSet::new();
    for (path, object) in objects {
        if str_of(object, "kind") != Some("Deployment") {
            continue;
        }
        let name = object
            .get("metadata")
            .and_then(|m| str_of(m, "name"))
            .unwrap_or_default();
        deployments.insert(name.to_owned());
        check_deployment(
            binaries,
            report,
            path,
            object,
            &config_data,
            &mut config_maps,
        );
    }
    for (path, object) in objects {
        let kind = str_of(object, "kind").unwrap_or_default();
        let name = object
            .get("metadata")
            .and_then(|m| str_of(m, "name"))
            .unwrap_or_default();
        let spec = object.get("spec").unwrap_or(&Value::Null);
        let at = format!("{kind} {name}");
        match kind {
            "Deployment" => {}
            "ConfigMap" => match config_maps.get(name) {
                Some(binary) => {
                    if let Some(map) = object.get("data").and_then(Value::as_mapping) {
                        for key in map.keys().filter_map(Value::as_str) {
                            if let Err(error) = binary.check_env_key(key) {
                                report.problem(path, format!("{at}: {error}"));
                            }
                        }
                    }
                    if object
                        .get("metadata")
                        .and_then(|m| m.get("labels"))
                        .is_some()
                    {
                        report
                            .seen
                            .insert(("ConfigMap".to_owned(), binary.name.to_owned()));
                    }
                }
                None => report.problem(path, format!("{at}: no container reads it via envFrom")),
            },
            "Service" => {
                let Some(binary) = labelled_binary(binaries, spec.get("selector"), name) else {
                    report.problem(path, format!("{at}: selects no known binary"));
                    continue;
                };
                check_service_ports(report, path, &at, binary, spec);
                report
                    .seen
                    .insert(("Service".to_owned(), binary.name.to_owned()));
            }
            "HorizontalPodAutoscaler" => {
                if str_of(object, "apiVersion") != Some("autoscaling/v2") {
                    report.problem(path, format!("{at}: use autoscaling/v2"));
                }
                let target = spec
                    .get("scaleTargetRef")
                    .and_then(|target| str_of(target, "name"))
                    .unwrap_or(name);
                if !deployments.contains(target) {
                    report.problem(path, format!("{at}: scales no Deployment of these files"));
                } else if spec.get("scaleTargetRef").is_some() {
                    report
                        .seen
                        .insert(("HorizontalPodAutoscaler".to_owned(), target.to_owned()));
                }
            }
            "PodDisruptionBudget" => {
                let labels = spec.get("selector").and_then(|s| s.get("matchLabels"));
                match labelled_binary(binaries, labels, name) {
                    Some(binary) => {
                        report
                            .seen
                            .insert(("PodDisruptionBudget".to_owned(), binary.name.to_owned()));
                    }
                    None => report.problem(path, format!("{at}: selects no known binary")),
                }
            }
            "NetworkPolicy" => {
                check_network_policy(binaries, report, path, &at, name, spec, &namespaces);
            }
            "Kustomization" => check_kustomization(binaries, report, path, object),
            "Secret" => report.problem(
                path,
                format!(
                    "{at}: Secrets are never committed (dev: a secretGenerator in overlays/dev)"
                ),
            ),
            other => report.problem(path, format!("{at}: no check knows the kind {other}")),
        }
    }
}

fn check_deployment<'b>(
    binaries: &'b BTreeMap<&'static str, Binary>,
    report: &mut Report,
    path: &str,
    object: &Value,
    config_data: &BTreeMap<String, BTreeMap<String, Option<String>>>,
    config_maps: &mut BTreeMap<String, &'b Binary>,
) {
    let name = object
        .get("metadata")
        .and_then(|m| str_of(m, "name"))
        .unwrap_or_default();
    let pod = object
        .get("spec")
        .and_then(|spec| spec.get("template"))
        .and_then(|template| template.get("spec"))
        .unwrap_or(&Value::Null);
    for container in seq_of(pod, "containers") {
        let container_name = str_of(container, "name").unwrap_or_default();
        let at = format!("Deployment {name}, container {container_name}");
        let image = str_of(container, "image");
        let binary = match image.map(|image| image_binary(binaries, image)) {
            Some(Ok(Some(binary))) => binary,
            Some(Ok(None)) => {
                report.problem(path, format!("{at}: image {image:?} is not one of ours"));
                continue;
            }
            Some(Err(error)) => {
                report.problem(path, format!("{at}: {error}"));
                continue;
            }
            None => match binaries.get(container_name) {
                Some(binary) => binary,
                None => {
                    report.problem(path, format!("{at}: no image and no known binary's name"));
                    continue;
                }
            },
        };
        if container_name != binary.name {
            report.problem(
                path,
                format!("{at}: name the container {} after its binary", binary.name),
            );
        }
        // The environment: explicit variables, then the ConfigMaps read through envFrom.
        let mut env: BTreeMap<String, Option<String>> = BTreeMap::new();
        for from in seq_of(container, "envFrom") {
            if let Some(config_map) = from.get("configMapRef").and_then(|r| str_of(r, "name")) {
                config_maps.insert(config_map.to_owned(), binary);
                for (key, value) in config_data.get(config_map).into_iter().flatten() {
                    env.entry(key.clone()).or_insert_with(|| value.clone());
                }
            }
            if from.get("prefix").is_some() {
                report.problem(path, format!("{at}: envFrom with a prefix"));
            }
        }
        for variable in seq_of(container, "env") {
            let key = str_of(variable, "name").unwrap_or_default();
            if let Err(error) = binary.check_env_key(key) {
                report.problem(path, format!("{at}: {error}"));
            }
            env.insert(key.to_owned(), variable.get("value").and_then(scalar));
        }
        let (grpc, metrics) = match (
            binary.effective_grpc_port(&env),
            binary.effective_metrics_port(&env),
        ) {
            (Ok(grpc), Ok(metrics)) => (grpc, metrics),
            (Err(error), _) | (_, Err(error)) => {
                report.problem(path, format!("{at}: {error}"));
                continue;
            }
        };
        let mut named = BTreeMap::new();
        for port in seq_of(container, "ports") {
            let number = port
                .get("containerPort")
                .and_then(Value::as_u64)
                .unwrap_or_default();
            let port_name = str_of(port, "name").unwrap_or_default();
            let expected = match port_name {
                "grpc" => grpc,
                "metrics" => metrics,
                other => {
                    report.problem(
                        path,
                        format!("{at}: port {number} named {other:?}, not grpc or metrics"),
                    );
                    continue;
                }
            };
            if number != u64::from(expected) {
                report.problem(
                    path,
                    format!(
                        "{at}: {port_name} port {number}, but {} listens on {expected}",
                        binary.name
                    ),
                );
            }
            named.insert(port_name, number);
        }
        for probe_kind in ["readinessProbe", "livenessProbe", "startupProbe"] {
            let Some(probe) = container.get(probe_kind) else {
                continue;
            };
            // A patch that swaps a gRPC probe for an exec one sets `grpc: null`.
            if let Some(grpc_probe) = probe.get("grpc").filter(|grpc| !grpc.is_null()) {
                let port = grpc_probe.get("port").and_then(Value::as_u64);
                if port != Some(u64::from(grpc)) {
                    report.problem(
                        path,
                        format!("{at}: {probe_kind} asks port {port:?}, not the gRPC port {grpc}"),
                    );
                }
                if grpc_probe
                    .get("service")
                    .and_then(Value::as_str)
                    .is_some_and(|s| !s.is_empty())
                {
                    report.problem(
                        path,
                        format!("{at}: {probe_kind} must ask the whole server"),
                    );
                }
            } else if let Some(exec) = probe.get("exec") {
                let command: Vec<&str> = seq_of(exec, "command")
                    .iter()
                    .filter_map(Value::as_str)
                    .collect();
                if let Err(error) = check_health_command(&command, grpc) {
                    report.problem(path, format!("{at}: {probe_kind}: {error}"));
                }
            } else {
                report.problem(
                    path,
                    format!(
                        "{at}: {probe_kind} must be a grpc probe or exec `/app/service health`"
                    ),
                );
            }
        }
        if image.is_some() {
            check_complete_container(report, path, &at, pod, container, &named);
            report
                .seen
                .insert(("Deployment".to_owned(), binary.name.to_owned()));
        }
    }
}

/// What a container of a base Deployment (one with its image) must have.
fn check_complete_container(
    report: &mut Report,
    path: &str,
    at: &str,
    pod: &Value,
    container: &Value,
    named: &BTreeMap<&str, u64>,
) {
    for port in ["grpc", "metrics"] {
        if !named.contains_key(port) {
            report.problem(path, format!("{at}: no container port named {port}"));
        }
    }
    for probe in ["readinessProbe", "livenessProbe"] {
        if container.get(probe).is_none() {
            report.problem(path, format!("{at}: no {probe}"));
        }
    }
    let resources = container.get("resources").unwrap_or(&Value::Null);
    for bound in ["requests", "limits"] {
        for resource in ["cpu", "memory"] {
            if resources.get(bound).and_then(|b| b.get(resource)).is_none() {
                report.problem(path, format!("{at}: no resources.{bound}.{resource}"));
            }
        }
    }
    let pod_security = pod.get("securityContext").unwrap_or(&Value::Null);
    let security = container.get("securityContext").unwrap_or(&Value::Null);
    let setting = |key: &str| security.get(key).or_else(|| pod_security.get(key));
    if setting("runAsNonRoot").and_then(Value::as_bool) != Some(true) {
        report.problem(path, format!("{at}: runAsNonRoot is not true"));
    }
    if setting("runAsUser").and_then(Value::as_u64) != Some(10001) {
        report.problem(
            path,
            format!("{at}: runAsUser is not 10001, the image's user"),
        );
    }
    if security
        .get("readOnlyRootFilesystem")
        .and_then(Value::as_bool)
        != Some(true)
    {
        report.problem(path, format!("{at}: readOnlyRootFilesystem is not true"));
    }
    if security
        .get("allowPrivilegeEscalation")
        .and_then(Value::as_bool)
        != Some(false)
    {
        report.problem(path, format!("{at}: allowPrivilegeEscalation is not false"));
    }
}

fn check_service_ports(report: &mut Report, path: &str, at: &str, binary: &Binary, spec: &Value) {
    let mut names = BTreeSet::new();
    for port in seq_of(spec, "ports") {
        let number = port.get("port").and_then(Value::as_u64).unwrap_or_default();
        let port_name = str_of(port, "name").unwrap_or_default();
        let expected = match port_name {
            "grpc" => binary.grpc_port,
            "metrics" => binary.metrics_port,
            other => {
                report.problem(
                    path,
                    format!("{at}: port {number} named {other:?}, not grpc or metrics"),
                );
                continue;
            }
        };
        names.insert(port_name);
        if number != u64::from(expected) {
            report.problem(
                path,
                format!(
                    "{at}: {port_name} port {number}, but {} listens on {expected}",
                    binary.name
                ),
            );
        }
        match port.get("targetPort") {
            None => {}
            Some(Value::String(target)) if target == port_name => {}
            Some(Value::Number(target)) if target.as_u64() == Some(u64::from(expected)) => {}
            Some(other) => report.problem(
                path,
                format!("{at}: {port_name} targets {other:?}, not the container port {port_name}"),
            ),
        }
    }
    if names.len() != 2 {
        report.problem(path, format!("{at}: must expose both grpc and metrics"));
    }
}

/// The namespaces each binary is deployed to: the `namespace` of every kustomization that
/// sets the binary's image.
fn deployed_namespaces(
    binaries: &BTreeMap<&'static str, Binary>,
    objects: &[(&str, Value)],
) -> BTreeMap<&'static str, BTreeSet<String>> {
    let mut namespaces: BTreeMap<&'static str, BTreeSet<String>> = BTreeMap::new();
    for (_, object) in objects {
        if str_of(object, "kind") != Some("Kustomization") {
            continue;
        }
        let Some(namespace) = str_of(object, "namespace") else {
            continue;
        };
        for image in seq_of(object, "images") {
            if let Ok(Some(binary)) = image_binary(binaries, str_of(image, "name").unwrap_or("")) {
                namespaces
                    .entry(binary.name)
                    .or_default()
                    .insert(namespace.to_owned());
            }
        }
    }
    namespaces
}

fn check_network_policy(
    binaries: &BTreeMap<&'static str, Binary>,
    report: &mut Report,
    path: &str,
    at: &str,
    name: &str,
    spec: &Value,
    namespaces: &BTreeMap<&'static str, BTreeSet<String>>,
) {
    let labels = spec.get("podSelector").and_then(|s| s.get("matchLabels"));
    let Some(binary) = labelled_binary(binaries, labels, name) else {
        report.problem(path, format!("{at}: selects no known binary"));
        return;
    };
    if !seq_of(spec, "policyTypes")
        .iter()
        .any(|t| t.as_str() == Some("Ingress"))
    {
        report.problem(path, format!("{at}: policyTypes lacks Ingress"));
    }
    for rule in seq_of(spec, "ingress") {
        let ports: Vec<u64> = seq_of(rule, "ports")
            .iter()
            .map(|p| p.get("port").and_then(Value::as_u64).unwrap_or_default())
            .collect();
        if ports.is_empty() {
            report.problem(path, format!("{at}: a rule admits every port"));
        }
        let peers = seq_of(rule, "from");
        if peers.is_empty() {
            report.problem(path, format!("{at}: a rule admits every peer"));
        }
        for port in ports {
            if port == u64::from(binary.metrics_port) {
                for peer in peers {
                    let namespace = peer
                        .get("namespaceSelector")
                        .and_then(|s| s.get("matchLabels"))
                        .and_then(|l| str_of(l, "kubernetes.io/metadata.name"));
                    if namespace != Some("monitoring") || peer.get("podSelector").is_some() {
                        report.problem(
                            path,
                            format!(
                                "{at}: metrics open to {peer:?}, not only the monitoring namespace"
                            ),
                        );
                    }
                }
            } else if port == u64::from(binary.grpc_port) {
                for peer in peers {
                    if let Err(why) = grpc_peer_allowed(binary, peer, namespaces) {
                        report.problem(path, format!("{at}: gRPC open to {peer:?}: {why}"));
                    }
                }
            } else {
                report.problem(
                    path,
                    format!(
                        "{at}: port {port} is neither {}'s gRPC nor its metrics port",
                        binary.name
                    ),
                );
            }
        }
    }
    report
        .seen
        .insert(("NetworkPolicy".to_owned(), binary.name.to_owned()));
}

/// Gateways admit BFFs of one named namespace; foundation services admit each gateway from
/// the namespace its kustomizations deploy it to (namespace and pod labels in the same `from`
/// element, so that both must match) and, for counts, the relays of its own namespace.
fn grpc_peer_allowed(
    binary: &Binary,
    peer: &Value,
    namespaces: &BTreeMap<&'static str, BTreeSet<String>>,
) -> Result<(), String> {
    if peer.get("ipBlock").is_some() {
        return Err("an ipBlock".into());
    }
    let Some(pods) = peer.get("podSelector") else {
        return Err("no podSelector: every pod of the namespaces".into());
    };
    let labels = pods.get("matchLabels");
    let component = labels.and_then(|l| str_of(l, "app.kubernetes.io/component"));
    let namespace = pinned_namespace(peer);
    if binary.is_gateway() {
        return match (component, namespace) {
            (Some("bff"), Some(_)) => Ok(()),
            (Some("bff"), None) => Err("BFFs of any namespace".into()),
            _ => Err("pods that are not BFFs".into()),
        };
    }
    if component == Some("gateway") {
        let Some(gateway) = labels
            .and_then(|l| str_of(l, "app.kubernetes.io/name"))
            .filter(|name| GATEWAYS.contains(name))
        else {
            return Err("gateway pods not named after a gateway".into());
        };
        let Some(namespace) = namespace else {
            return Err(format!("{gateway} pods of any namespace"));
        };
        let deployed = namespaces.get(gateway).cloned().unwrap_or_default();
        return if deployed.contains(namespace) {
            Ok(())
        } else {
            Err(format!(
                "{gateway} pods of the namespace {namespace}, but it is deployed to {deployed:?}"
            ))
        };
    }
    // The relays: only counts, only from pods of tracks, likes and follows in its namespace.
    let expressions = seq_of(pods, "matchExpressions");
    let relays = binary.name == "counts"
        && peer.get("namespaceSelector").is_none()
        && !expressions.is_empty()
        && expressions.iter().all(|expression| {
            str_of(expression, "key") == Some("app.kubernetes.io/name")
                && str_of(expression, "operator") == Some("In")
                && seq_of(expression, "values")
                    .iter()
                    .all(|v| v.as_str().is_some_and(|v| RELAYS.contains(&v)))
        });
    if relays {
        Ok(())
    } else {
        Err("neither a gateway nor a relay of counts".into())
    }
}

/// The namespace a peer's `namespaceSelector` pins by `kubernetes.io/metadata.name` (a label
/// the API server sets from the name, which nobody can change); `None` when it selects any
/// namespace (`{}`) or namespaces by labels their owners may set.
fn pinned_namespace(peer: &Value) -> Option<&str> {
    let labels = peer.get("namespaceSelector")?.get("matchLabels")?;
    str_of(labels, "kubernetes.io/metadata.name")
}

fn check_kustomization(
    binaries: &BTreeMap<&'static str, Binary>,
    report: &mut Report,
    path: &str,
    object: &Value,
) {
    let dir = root().join(path);
    let dir = dir.parent().unwrap();
    for resource in seq_of(object, "resources").iter().filter_map(Value::as_str) {
        if !dir.join(resource).exists() {
            report.problem(path, format!("resource {resource} does not exist"));
        }
    }
    for patch in seq_of(object, "patches") {
        let Some(file) = str_of(patch, "path") else {
            continue;
        };
        match std::fs::read_to_string(dir.join(file)) {
            // `patches` applies one patch per file.
            Ok(text) => match documents(&text) {
                Ok(docs) if docs.len() == 1 => {}
                _ => report.problem(path, format!("patch {file} must hold exactly one document")),
            },
            Err(_) => report.problem(path, format!("patch {file} does not exist")),
        }
    }
    for image in seq_of(object, "images") {
        let name = str_of(image, "name").unwrap_or_default();
        let binary = match image_binary(binaries, name) {
            Ok(Some(binary)) => binary,
            _ => {
                report.problem(path, format!("image {name} names no known binary"));
                continue;
            }
        };
        if let Some(new_name) = str_of(image, "newName")
            && !matches!(image_binary(binaries, new_name), Ok(Some(b)) if b.name == binary.name)
        {
            report.problem(
                path,
                format!("image {name} renamed to {new_name}, another binary"),
            );
        }
    }
    if object.get("secretGenerator").is_some() && !path.contains("/overlays/dev/") {
        report.problem(path, "secrets are generated only in a dev overlay");
    }
}

#[test]
fn deploy_files_match_the_binaries() {
    let binaries = binaries();
    let files = deploy_files();
    let report = check(&binaries, &files);
    assert!(
        report.problems.is_empty(),
        "{} problems in deploy/:\n{}",
        report.problems.len(),
        report.problems.join("\n")
    );
    // Every binary is deployed somewhere, so that no check above passes by finding nothing.
    let mut missing = Vec::new();
    for binary in binaries.values() {
        let mut kinds = vec![
            "compose",
            "Deployment",
            "Service",
            "ConfigMap",
            "PodDisruptionBudget",
            "NetworkPolicy",
        ];
        if binary.is_gateway() {
            kinds.push("HorizontalPodAutoscaler");
        }
        for kind in kinds {
            if !report
                .seen
                .contains(&(kind.to_owned(), binary.name.to_owned()))
            {
                missing.push(format!("{kind} of {}", binary.name));
            }
        }
    }
    assert!(missing.is_empty(), "not deployed: {}", missing.join(", "));
    // Each team ships its own compose file and kustomize base and overlays.
    for team in ["consumer", "creator", "foundation"] {
        for file in [
            "compose.yaml",
            "README.md",
            "k8s/base/kustomization.yaml",
            "k8s/overlays/dev/kustomization.yaml",
            "k8s/overlays/prod/kustomization.yaml",
        ] {
            let path = format!("deploy/{team}/{file}");
            assert!(root().join(&path).exists(), "{path} is missing");
        }
    }
}

/// The checks catch drift: each edit of a real file below must be reported.
#[test]
fn drift_is_reported() {
    let binaries = binaries();
    let files = deploy_files();
    let cases = [
        (
            "deploy/consumer/k8s/base/deployment.yaml",
            "containerPort: 50051",
            "containerPort: 50052",
            "grpc port 50052, but consumer-gateway listens on 50051",
        ),
        (
            "deploy/consumer/k8s/base/deployment.yaml",
            "port: 50051\n            periodSeconds: 5",
            "port: 9051\n            periodSeconds: 5",
            "readinessProbe asks port Some(9051)",
        ),
        (
            "deploy/creator/compose.yaml",
            "UPSTREAMS__TRACKS__URL",
            "UPSTREAMS__TRACK__URL",
            "upstreams.track.url is not a key",
        ),
        (
            "deploy/foundation/compose.yaml",
            "\"/app/service\", \"health\"",
            "\"/app/service\", \"--print-config\"",
            "is not `/app/service health`",
        ),
        (
            "deploy/foundation/k8s/base/tracks.yaml",
            "TRACKS_OUTBOX__COUNTS_URL",
            "LIKES_OUTBOX__COUNTS_URL",
            "lacks the prefix TRACKS_",
        ),
        (
            "deploy/consumer/k8s/base/service.yaml",
            "port: 9051",
            "port: 9061",
            "metrics port 9061",
        ),
        (
            "deploy/creator/k8s/base/networkpolicy.yaml",
            "matchLabels:\n              app.kubernetes.io/component: bff",
            "matchLabels:\n              app.kubernetes.io/component: gateway",
            "gRPC open to",
        ),
        (
            "deploy/consumer/k8s/base/networkpolicy.yaml",
            "namespaceSelector:\n            matchLabels:\n              kubernetes.io/metadata.name: bff\n",
            "namespaceSelector: {}\n",
            "BFFs of any namespace",
        ),
        (
            "deploy/foundation/k8s/base/networkpolicy.yaml",
            "namespaceSelector:\n            matchLabels:\n              kubernetes.io/metadata.name: consumer\n",
            "namespaceSelector: {}\n",
            "consumer-gateway pods of any namespace",
        ),
        (
            "deploy/foundation/k8s/base/networkpolicy.yaml",
            "kubernetes.io/metadata.name: creator\n",
            "kubernetes.io/metadata.name: consumer\n",
            "creator-gateway pods of the namespace consumer, but it is deployed to",
        ),
        (
            "deploy/foundation/k8s/base/networkpolicy.yaml",
            "app.kubernetes.io/name: consumer-gateway\n              app.kubernetes.io/component: gateway\n",
            "app.kubernetes.io/component: gateway\n",
            "gateway pods not named after a gateway",
        ),
    ];
    for (file, from, to, expected) in cases {
        let edited: Vec<(String, String)> = files
            .iter()
            .map(|(path, text)| {
                if path == file {
                    assert!(text.contains(from), "{file} no longer holds {from:?}");
                    (path.clone(), text.replacen(from, to, 1))
                } else {
                    (path.clone(), text.clone())
                }
            })
            .collect();
        let report = check(&binaries, &edited);
        assert!(
            report
                .problems
                .iter()
                .any(|p| p.starts_with(file) && p.contains(expected)),
            "editing {file} ({from:?} -> {to:?}) was not reported as {expected:?}; got {:#?}",
            report.problems
        );
    }
}

/// Files that make up the top-level Compose topology, and what each may publish on the host.
const COMPOSE_TOPOLOGY: [&str; 3] = [
    "deploy/compose.yaml",
    "deploy/compose.postgres.yaml",
    "deploy/compose.debug-ports.yaml",
];

/// The host address and container port of a Compose port mapping (`"8080:80"`,
/// `"127.0.0.1:8080:80/tcp"`, `80`, or the long form with `host_ip` and `target`); the host
/// address is `None` when the port is published on every interface.
fn compose_published(entry: &Value) -> (Option<String>, Option<u16>) {
    let port = compose_container_port(entry);
    let host = match entry {
        Value::Mapping(_) => str_of(entry, "host_ip").map(str::to_owned),
        other => scalar(other).and_then(|text| {
            let parts: Vec<&str> = text.split(':').collect();
            (parts.len() == 3).then(|| parts[0].to_owned())
        }),
    };
    (
        host.filter(|host| !host.is_empty() && host != "0.0.0.0"),
        port,
    )
}

/// What the Compose topology publishes on the host: the gateways' ports by default, never a
/// foundation service's or the database's; the foundation's ports, on loopback only, with the
/// debugging override. Problems are returned, each naming its file.
fn check_published_ports(
    binaries: &BTreeMap<&'static str, Binary>,
    files: &[(String, String)],
) -> Vec<String> {
    let mut problems = Vec::new();
    for file in COMPOSE_TOPOLOGY {
        let Some((_, text)) = files.iter().find(|(path, _)| path == file) else {
            problems.push(format!("{file} is missing"));
            continue;
        };
        let docs = documents(text).unwrap_or_default();
        let Some(services) = docs
            .first()
            .and_then(|doc| doc.get("services"))
            .and_then(Value::as_mapping)
        else {
            problems.push(format!("{file}: no services"));
            continue;
        };
        let debug = file.ends_with("debug-ports.yaml");
        let mut published_foundations = BTreeSet::new();
        for (name, service) in services {
            let name = name.as_str().unwrap_or_default();
            let binary = match str_of(service, "image") {
                Some(image) => image_binary(binaries, image).ok().flatten(),
                None => binaries.get(name),
            };
            let ports: Vec<_> = seq_of(service, "ports")
                .iter()
                .map(compose_published)
                .collect();
            match binary {
                Some(binary) if binary.is_gateway() => {
                    if debug && !ports.is_empty() {
                        problems.push(format!(
                            "{file}: {name} is published by compose.yaml, not the debugging override"
                        ));
                    }
                    if file == "deploy/compose.yaml"
                        && !ports
                            .iter()
                            .any(|(_, port)| *port == Some(binary.grpc_port))
                    {
                        problems.push(format!("{file}: {name} does not publish its gRPC port"));
                    }
                }
                Some(binary) if debug => {
                    for (host, port) in &ports {
                        if host.as_deref() != Some("127.0.0.1") {
                            problems.push(format!(
                                "{file}: {name} publishes {port:?} beyond the loopback interface"
                            ));
                        }
                    }
                    let wanted = [Some(binary.grpc_port), Some(binary.metrics_port)];
                    if wanted
                        .iter()
                        .all(|port| ports.iter().any(|(_, published)| published == port))
                    {
                        published_foundations.insert(binary.name);
                    }
                }
                _ => {
                    if !ports.is_empty() {
                        problems.push(format!(
                            "{file}: {name} publishes {ports:?}; only the gateways are published by default"
                        ));
                    }
                }
            }
        }
        if debug {
            for binary in binaries.values().filter(|binary| !binary.is_gateway()) {
                if !published_foundations.contains(binary.name) {
                    problems.push(format!(
                        "{file}: does not publish the gRPC and metrics ports of {}",
                        binary.name
                    ));
                }
            }
        }
    }
    problems
}

/// The foundation services have no caller authentication of their own, so the Compose topology
/// keeps them on its internal network unless the debugging override is added.
#[test]
fn compose_publishes_only_the_gateways_unless_debugging() {
    let binaries = binaries();
    let files = deploy_files();
    let problems = check_published_ports(&binaries, &files);
    assert!(problems.is_empty(), "{}", problems.join("\n"));

    // The check catches what it is for.
    let cases = [
        (
            "deploy/compose.yaml",
            "    volumes: [counts-data:/data]\n",
            "    volumes: [counts-data:/data]\n    ports: [\"50064:50064\"]\n",
            "deploy/compose.yaml: counts publishes",
        ),
        (
            "deploy/compose.postgres.yaml",
            "    command: [\"-c\"",
            "    ports: [\"5432:5432\"]\n    command: [\"-c\"",
            "deploy/compose.postgres.yaml: postgres publishes",
        ),
        (
            "deploy/compose.debug-ports.yaml",
            "\"127.0.0.1:50061:50061\"",
            "\"50061:50061\"",
            "tracks publishes Some(50061) beyond the loopback interface",
        ),
        (
            "deploy/compose.debug-ports.yaml",
            "\"127.0.0.1:9063:9063\"",
            "\"127.0.0.1:50063:50063\"",
            "does not publish the gRPC and metrics ports of follows",
        ),
    ];
    for (file, from, to, expected) in cases {
        let edited: Vec<(String, String)> = files
            .iter()
            .map(|(path, text)| {
                if path == file {
                    assert!(text.contains(from), "{file} no longer holds {from:?}");
                    (path.clone(), text.replacen(from, to, 1))
                } else {
                    (path.clone(), text.clone())
                }
            })
            .collect();
        let problems = check_published_ports(&binaries, &edited);
        assert!(
            problems.iter().any(|p| p.contains(expected)),
            "editing {file} ({from:?} -> {to:?}) was not reported as {expected:?}; got {problems:#?}"
        );
    }
}
