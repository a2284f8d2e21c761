#!/usr/bin/env bash
# Runs the README's client examples against a running topology and checks what they print.
#
# The README is the only copy of the examples: every fenced block between
# `<!-- examples:begin -->` and `<!-- examples:end -->` is read in order and run as one shell
# session. Each command must succeed (`buf curl` exits non-zero on any status but OK, and
# `curl --fail-with-body` on any HTTP error), and each `#=> text` line under a command names
# text that the command must print. A README whose blocks hold no command or no check fails,
# so that the check cannot pass by finding nothing.
#
# Usage: deploy/examples.sh [README]      (`just examples`; default: the repository's README.md)
#
# The topology: `just up` in another terminal, or the Compose topology (`just compose-up`).
# CONSUMER_URL and CREATOR_URL (default http://127.0.0.1:50051 and http://127.0.0.1:50052)
# replace the addresses that the README names. EXAMPLES_WAIT_SECONDS (default 60) is how long
# to wait for both gateways to report SERVING. `buf` is installed from PyPI (buf-bin) when it
# is not on PATH.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readme="$(realpath "${1:-$root/README.md}")"
cd "$root"

readme_consumer="http://127.0.0.1:50051"
readme_creator="http://127.0.0.1:50052"
consumer_url="${CONSUMER_URL:-$readme_consumer}"
creator_url="${CREATOR_URL:-$readme_creator}"
wait_seconds="${EXAMPLES_WAIT_SECONDS:-60}"

# buf from PyPI, as the README installs it.
scripts="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')"
export PATH="$scripts:$PATH"
if ! command -v buf >/dev/null 2>&1; then
    echo "examples: installing buf from PyPI (buf-bin)"
    python3 -m pip install --quiet buf-bin
    hash -r
fi
echo "examples: $(buf --version 2>&1 | head -n 1 | sed 's/^/buf /')"

# The blocks, in order: the fence lines themselves are left out, and each block starts with an
# empty comment, so that no block's commands are named after the last comment of the one before.
blocks="$(awk '
    /<!-- examples:begin -->/ { inside = 1; print "#"; next }
    /<!-- examples:end -->/   { inside = 0; next }
    inside && /^```/          { next }
    inside                    { print }
' "$readme")"

commands=()   # one entry per command, continuation lines joined by newlines
checks=()     # the `#=>` texts of the command at the same index, one a line
titles=()     # the comment above each command, to name it in the output
pending=""    # a command whose last line ends with a backslash
comment=""
while IFS= read -r line || [[ -n "$line" ]]; do
    if [[ -n "$pending" ]]; then
        pending+=$'\n'"$line"
        if [[ "$line" != *\\ ]]; then
            commands+=("$pending")
            checks+=("")
            titles+=("$comment")
            pending=""
        fi
        continue
    fi
    [[ "$line" =~ ^[[:space:]]*$ ]] && continue
    case "$line" in
        "#=> "*)
            (( ${#commands[@]} > 0 )) || { echo "examples: a check comes before the first command: $line" >&2; exit 1; }
            last=$(( ${#commands[@]} - 1 ))
            checks[last]+="${line#"#=> "}"$'\n'
            ;;
        "#"*) comment="${line#"#"}"; comment="${comment# }" ;;
        *\\) pending="$line" ;;
        *)
            commands+=("$line")
            checks+=("")
            titles+=("$comment")
            ;;
    esac
done <<<"$blocks"
[[ -z "$pending" ]] || { echo "examples: the last command ends with a backslash" >&2; exit 1; }

checked=0
for check in "${checks[@]}"; do
    if [[ -n "$check" ]]; then checked=$(( checked + 1 )); fi
done
if (( ${#commands[@]} == 0 || checked == 0 )); then
    echo "examples: $readme has no checked examples between <!-- examples:begin --> and <!-- examples:end -->" >&2
    exit 1
fi

# Both gateways answer their health checks before the first example.
serving() {
    buf curl --protocol grpc --http2-prior-knowledge --connect-timeout 2 --timeout 5s -d '{}' \
        "$1/grpc.health.v1.Health/Check" 2>/dev/null | grep -q '"SERVING"'
}
deadline=$(( $(date +%s) + wait_seconds ))
for url in "$consumer_url" "$creator_url"; do
    until serving "$url"; do
        if (( $(date +%s) >= deadline )); then
            echo "examples: no gateway reports SERVING at $url after ${wait_seconds} s;" \
                "start the topology first (\`just up\` in another terminal)" >&2
            exit 1
        fi
        sleep 1
    done
done
echo "examples: the consumer gateway at $consumer_url and the creator gateway at $creator_url are serving"

passed=0
current=""
out="$(mktemp)"
shown=false   # whether the output of the current command was printed
report() {
    local status=$?
    if (( status != 0 )) && [[ -n "$current" ]]; then
        # What a failed command printed before it failed (curl's error body, say).
        if [[ "$shown" == false && -s "$out" ]]; then
            cat "$out"
            if [[ -n "$(tail -c 1 "$out")" ]]; then echo; fi
        fi
        echo "examples: failed (exit $status): $current" >&2
        echo "examples: $passed passed, 1 failed" >&2
    fi
    rm -f "$out"
}
trap report EXIT

started=$(date +%s)
for i in "${!commands[@]}"; do
    snippet="${commands[i]}"
    snippet="${snippet//"$readme_consumer"/"$consumer_url"}"
    snippet="${snippet//"$readme_creator"/"$creator_url"}"
    current="${titles[i]:-example $(( i + 1 ))}"
    printf '\n$ %s\n' "$snippet"
    shown=false
    # The command runs in this shell, so that its variables and functions serve the next ones
    # (the README's are upper case, this script's lower case); it reads nothing from stdin.
    eval "$snippet" >"$out" </dev/null
    cat "$out"
    shown=true
    while IFS= read -r expected; do
        [[ -n "$expected" ]] || continue
        if ! grep -qF -- "$expected" "$out"; then
            echo "examples: the output lacks: $expected" >&2
            exit 1
        fi
    done <<<"${checks[i]}"
    passed=$(( passed + 1 ))
done
current=""
echo
echo "examples: every README example ran against the topology in $(( $(date +%s) - started )) s"
echo "examples: $passed passed, 0 failed"
