#!/usr/bin/env bash
# `make run`: starts the demo upstream (8081), the control plane (8080, SQLite
# under data/) and Envoy with the keygate filter (10000, operator API 10001,
# admin 9901), all on
# 127.0.0.1; waits until the filter has its key table, prints what to try,
# and stops everything on Ctrl-C (or when any of the three exits).
# ADAPTER=wasm (default: the wasm filter, envoy/envoy.yaml) or ADAPTER=native
# (the dynamic module, envoy/envoy-native.yaml; `make run ADAPTER=native`).
# Expects the filter and the binaries built (`make run` builds them first).
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

# The feed token: the control plane (--feed-token) and the filter in Envoy
# (feed.token_env) both read it from this variable; a development value
# unless set. It is in no config file and on no command line.
export KEYGATE_FEED_TOKEN="${KEYGATE_FEED_TOKEN:-keygate-dev-feed-token}"
database="${KEYGATE_DATABASE:-data/keygate.db}"
envoy="$("$root/scripts/ensure-envoy.sh")"
bin="${CARGO_TARGET_DIR:-target}/release"

adapter="${ADAPTER:-wasm}"
case "$adapter" in
  wasm)
    config=envoy/envoy.yaml
    # envoy.yaml names the wasm relative to the repository root.
    artifact=target/wasm32-wasip1/release/keygate_filter.wasm
    build="make wasm"
    ;;
  native)
    config=envoy/envoy-native.yaml
    artifact="${CARGO_TARGET_DIR:-target}/native/libkeygate_native.so"
    build="make native"
    # envoy-native.yaml names the module; Envoy looks it up in this directory.
    ENVOY_DYNAMIC_MODULES_SEARCH_PATH="$(cd "$(dirname "$artifact")" 2>/dev/null && pwd || true)"
    export ENVOY_DYNAMIC_MODULES_SEARCH_PATH
    ;;
  *)
    echo "keygate: ADAPTER=$adapter: expected wasm or native" >&2
    exit 2
    ;;
esac
if [ ! -f "$artifact" ]; then
  echo "keygate: $artifact is missing; build it first ($build)" >&2
  exit 1
fi

for port in 10000 10001 9901 8080 8081; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "keygate: port $port on 127.0.0.1 is already in use; stop whatever listens there" >&2
    exit 1
  fi
done

pids=()
stop_all() {
  trap - INT TERM EXIT
  echo
  echo "keygate: stopping"
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap stop_all EXIT
trap 'stop_all; exit 130' INT TERM

# Runs a command in the background with its output prefixed by a tag.
start() {
  local tag="$1"
  shift
  "$@" > >(sed -u "s/^/[$tag] /") 2>&1 &
  pids+=("$!")
}

wait_for() {
  local what="$1" url="$2"
  for _ in $(seq 1 300); do
    if curl -fs -o /dev/null "$url"; then return 0; fi
    sleep 0.1
  done
  echo "keygate: $what did not come up at $url" >&2
  exit 1
}

mkdir -p "$(dirname "$database")"
start upstream "$bin/keygate-demo-upstream" --listen 127.0.0.1:8081
start control-plane "$bin/keygate-control-plane" serve --listen 127.0.0.1:8080 \
  --database "$database"
wait_for "the control plane" http://127.0.0.1:8080/healthz
start envoy "$envoy" -c "$config" --concurrency 2 --disable-hot-restart --log-level warn
wait_for "Envoy" http://127.0.0.1:9901/ready

# The filter answers 503 until its first key table arrives, 401 after.
for _ in $(seq 1 300); do
  code="$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:10000/ || true)"
  [ "$code" = "401" ] && break
  sleep 0.1
done

cat <<MSG

keygate is running on 127.0.0.1:
  Envoy + keygate ($adapter)  http://127.0.0.1:10000   (admin http://127.0.0.1:9901, $config)
  operator API listener   http://127.0.0.1:10001/operator/v1/   (404 on 10000; off unless the
                          control plane has an operator token: KEYGATE_OPERATOR_TOKEN)
  control plane           http://127.0.0.1:8080    (database $database)
  demo upstream           http://127.0.0.1:8081    (echoes requests as JSON)
  dashboard               http://127.0.0.1:10000/dashboard   (sign up, create a key, use it)

Try it (another terminal):
  # 1. register a tenant: the answer holds its first API key, shown once
  curl -s -X POST http://127.0.0.1:10000/api/v1/tenants \\
       -H 'content-type: application/json' -d '{"name":"Acme","email":"dev@acme.example"}'
  export KEY=rk_live_...   # the "api_key" from the answer

  # 2. call an API with the key: the demo upstream shows what it received
  curl -s http://127.0.0.1:10000/api/v1/memory -H "Authorization: Bearer \$KEY"

  # 3. without a key
  curl -si http://127.0.0.1:10000/api/v1/memory

More in README.md. Ctrl-C stops everything.

MSG

# Stop everything as soon as one of the three exits.
wait -n "${pids[@]}" || true
echo "keygate: a process exited; stopping the others" >&2
exit 1
