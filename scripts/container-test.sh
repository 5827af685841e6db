#!/usr/bin/env bash
# Container smoke test: build the image, start it with compose, wait for healthy, check the fits' numbers,
# show that a job result survives a restart, check it runs as non-root, and tear everything down whatever fails.
set -euo pipefail
cd "$(dirname "$0")/.."

if docker compose version >/dev/null 2>&1; then compose_cmd=(docker compose); else compose_cmd=(docker-compose); fi
project="emsmoke$$"
export EM_HOST_PORT="${EM_HOST_PORT:-18080}"
base="http://127.0.0.1:${EM_HOST_PORT}"
compose() { "${compose_cmd[@]}" -p "$project" "$@"; }
log() { printf 'container-test: %s\n' "$*"; }

cleanup() {
  status=$?
  if ((status != 0)); then compose logs --tail 50 || true; fi
  compose down -v --remove-orphans >/dev/null 2>&1 || true
  # The teardown is part of the test: nothing of this project may be left running.
  left=$(docker ps -aq --filter "label=com.docker.compose.project=$project")
  if [[ -n $left ]]; then
    log "FAIL: containers left after teardown: $left"
    docker rm -f $left >/dev/null 2>&1 || true
    status=1
  fi
  log "torn down, no container left (exit $status)"
  exit "$status"
}
trap cleanup EXIT

wait_healthy() {
  local container health
  container=$(compose ps -q em)
  for _ in $(seq 1 90); do
    health=$(docker inspect --format '{{.State.Health.Status}}' "$container" 2>/dev/null || echo starting)
    [[ $health == healthy ]] && { log "healthy"; return 0; }
    sleep 1
  done
  log "not healthy after 90 s (last: $health)"; return 1
}

log "building with ${compose_cmd[*]}"
compose build --quiet 2>/dev/null || compose build
log "image size: $(docker image inspect em-service:latest --format '{{.Size}}' | awk '{printf "%.0f MB", $1/1e6}')"
compose up -d
wait_healthy
# Without --profile only the default service starts: the `cluster` profile's services stay down.
running=$(docker ps -q --filter "label=com.docker.compose.project=$project" | wc -l)
[[ $running == 1 ]] || { log "FAIL: $running containers started without a profile, expected only em"; exit 1; }
log "only em started without a profile"

uid=$(docker exec "$(compose ps -q em)" id -u)
[[ $uid != 0 ]] || { log "FAIL: the service runs as root"; exit 1; }
log "runs as uid $uid (not root)"

python3 scripts/container_checks.py "$base" fits
job_id=$(python3 scripts/container_checks.py "$base" submit-job)
log "job $job_id succeeded; restarting the stack"
compose restart
wait_healthy
python3 scripts/container_checks.py "$base" check-job "$job_id"
log "PASS"
