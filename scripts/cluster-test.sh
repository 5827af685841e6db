#!/usr/bin/env bash
# Cluster smoke test of the compose profile `cluster` (the distributed backend): build, bring it up exactly as the
# README says (`--profile cluster up -d --scale worker=3`), wait until both API replicas are ready and count three RQ
# workers and the Dask scheduler counts two workers; submit a job on replica 1 and follow it on replica 2 (its
# events until `succeeded`, then GET shows the result); queue a job while no worker runs, restart Redis and show it
# still runs (append-only file); then `down -v` and check that no container, network or volume of the project is
# left. Prints PASS or FAIL; exits non-zero on failure, tearing down whatever happens.
set -euo pipefail
cd "$(dirname "$0")/.."

if docker compose version >/dev/null 2>&1; then compose_cmd=(docker compose); else compose_cmd=(docker-compose); fi
project="emcluster$$"
export EM_HOST_PORT="${EM_HOST_PORT:-18090}" EM_API1_PORT="${EM_API1_PORT:-18091}" EM_API2_PORT="${EM_API2_PORT:-18092}"
api1="http://127.0.0.1:${EM_API1_PORT}"
api2="http://127.0.0.1:${EM_API2_PORT}"
compose() { "${compose_cmd[@]}" -p "$project" --profile cluster "$@"; }
log() { printf 'cluster-test: %s\n' "$*"; }
started=$SECONDS

leftovers() {
  local kind
  for kind in container network volume; do
    case $kind in
      container) docker ps -aq --filter "label=com.docker.compose.project=$project" ;;
      *) docker "$kind" ls -q --filter "label=com.docker.compose.project=$project" ;;
    esac | sed "s/^/$kind /"
  done
}

cleanup() {
  status=$?
  trap - EXIT
  if ((status != 0)); then compose logs --no-color --tail 30 2>/dev/null || true; fi
  # The teardown is part of the test: it must leave no container, network or volume of the project.
  compose down -v --remove-orphans >/dev/null 2>&1 || { log "FAIL: down -v failed"; status=1; }
  left=$(leftovers)
  if [[ -n $left ]]; then
    log "FAIL: left after down -v:" $left
    docker rm -f $(docker ps -aq --filter "label=com.docker.compose.project=$project") >/dev/null 2>&1 || true
    docker network rm $(docker network ls -q --filter "label=com.docker.compose.project=$project") >/dev/null 2>&1 || true
    docker volume rm $(docker volume ls -q --filter "label=com.docker.compose.project=$project") >/dev/null 2>&1 || true
    status=1
  else
    log "down -v: no container, network or volume of $project left"
  fi
  if ((status == 0)); then log "PASS ($((SECONDS - started)) s)"; else log "FAIL (exit $status, $((SECONDS - started)) s)"; fi
  exit "$status"
}
trap cleanup EXIT

wait_healthy() {  # service: every container of it healthy
  local service=$1 container health
  for _ in $(seq 1 90); do
    health=healthy
    for container in $(compose ps -q "$service"); do
      [[ $(docker inspect --format '{{.State.Health.Status}}' "$container" 2>/dev/null) == healthy ]] || health=starting
    done
    [[ $health == healthy ]] && return 0
    sleep 1
  done
  log "FAIL: $service not healthy after 90 s"; return 1
}

dask_workers() {
  docker exec "$(compose ps -q dask-scheduler)" python3 -c \
    "from distributed import Client; c = Client('tcp://127.0.0.1:8786', timeout=10); print(len(c.scheduler_info(n_workers=-1)['workers'])); c.close()" \
    2>/dev/null || echo 0
}

log "building (one image for the app roles, plus the local redis and postgres images)"
compose build --quiet 2>/dev/null || compose build
log "image sizes: $(docker image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep -E '^em-(service|redis|postgres):latest' | paste -sd, -)"

t0=$SECONDS
compose up -d --scale worker=3
python3 scripts/container_checks.py "$api1" wait-ready 3
python3 scripts/container_checks.py "$api2" wait-ready 3
for _ in $(seq 1 60); do [[ $(dask_workers) -ge 2 ]] && break; sleep 1; done
n=$(dask_workers)
((n >= 2)) || { log "FAIL: the Dask scheduler counts $n workers, not 2"; exit 1; }
log "up in $((SECONDS - t0)) s: $(compose ps -q worker | wc -l) RQ worker containers, $n Dask workers, containers:"
compose ps

job=$(python3 scripts/container_checks.py "$api1" submit-coins)
log "job $job submitted on replica 1 ($api1); following it on replica 2 ($api2)"
python3 scripts/container_checks.py "$api2" follow "$job"
python3 scripts/container_checks.py "$api2" check-coins "$job"

log "stopping the RQ workers, queueing a job, restarting Redis"
compose stop worker >/dev/null 2>&1
queued=$(python3 scripts/container_checks.py "$api1" submit-coins)
compose restart redis >/dev/null 2>&1
wait_healthy redis
compose start worker >/dev/null 2>&1
python3 scripts/container_checks.py "$api2" wait-job "$queued"
log "job $queued, queued before the Redis restart, ran after it"

compose ps -q >/dev/null  # the test's part is done; cleanup tears down and checks the leftovers
