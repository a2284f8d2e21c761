#!/usr/bin/env bash
# Waits until every container of a Compose project reports healthy (or, without a health check,
# runs), or fails after a timeout.
# Usage: deploy/wait-healthy.sh "<compose command>" [timeout seconds]
set -euo pipefail
compose="$1"
timeout="${2:-180}"
start=$(date +%s)
while true; do
    ids=$($compose ps -q)
    [[ -n "$ids" ]] || { echo "no containers are running" >&2; exit 1; }
    unhealthy=""
    for id in $ids; do
        # A container without a health check counts once it runs.
        status=$(docker inspect --format '{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}' "$id")
        if [[ "$status" != "healthy" && "$status" != "running" ]]; then
            unhealthy="$unhealthy $(docker inspect --format '{{.Name}}' "$id")=$status"
        fi
    done
    if [[ -z "$unhealthy" ]]; then
        echo "all healthy after $(( $(date +%s) - start )) s"
        exit 0
    fi
    if (( $(date +%s) - start > timeout )); then
        echo "not healthy after ${timeout} s:$unhealthy" >&2
        $compose logs --tail 50 >&2 || true
        exit 1
    fi
    sleep 1
done
