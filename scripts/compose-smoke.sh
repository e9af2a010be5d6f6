#!/usr/bin/env bash
# `make compose-smoke`: runs docker-compose.yml's Envoy config
# (envoy/compose/envoy.yaml) without Docker. In a private network and mount
# namespace (unshare; needs root), a private /etc/hosts maps the compose
# service names to loopback addresses: `control-plane` to two of them (as
# Docker's DNS does for two replicas; the second has nothing listening, as
# after a replica dies) and `demo-upstream` to a third. Then the built
# binaries and Envoy 1.40 run as in compose, and the script checks what a
# user would: both control-plane addresses are endpoints of the feed
# cluster, the filter gets its table (401 without a key), a tenant minted
# through Envoy gets its key through to the demo upstream (200).
# Expects `make build` done.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

if [ "${1:-}" != "--inside" ]; then
  envoy="$(scripts/ensure-envoy.sh)"
  exec unshare --net --mount env KEYGATE_SMOKE_ENVOY="$envoy" "$0" --inside
fi

bin="${CARGO_TARGET_DIR:-target}/release"
dir="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT
fail() {
  echo "compose-smoke: FAILED: $*" >&2
  tail -n 20 "$dir"/*.log >&2 || true
  exit 1
}

ip link set lo up
printf '127.0.0.1 localhost\n127.0.0.2 control-plane\n127.0.0.3 control-plane\n127.0.0.4 demo-upstream\n' >"$dir/hosts"
mount --bind "$dir/hosts" /etc/hosts
export KEYGATE_FEED_TOKEN=compose-smoke-token

"$bin/keygate-demo-upstream" --listen 127.0.0.4:8081 >"$dir/upstream.log" 2>&1 &
pids+=("$!")
KEYGATE_LISTEN=127.0.0.2:8080 KEYGATE_DATABASE="$dir/keygate.db" \
  "$bin/keygate-control-plane" serve >"$dir/control-plane.log" 2>&1 &
pids+=("$!")
"$KEYGATE_SMOKE_ENVOY" -c envoy/compose/envoy.yaml --concurrency 2 --disable-hot-restart --log-level warn >"$dir/envoy.log" 2>&1 &
pids+=("$!")

start=$(date +%s%N)
ms() { echo $(( ($(date +%s%N) - start) / 1000000 )); }
# Answers the first URL's status code once it is $2, within 10 s.
until_status() {
  local code
  for _ in $(seq 1 100); do
    code="$(curl -s -o "$dir/body" -w '%{http_code}' "${@:3}" "$1" || true)"
    [ "$code" = "$2" ] && return 0
    sleep 0.1
  done
  fail "$1 answered $code, not $2"
}

until_status http://127.0.0.1:10000/ 401
echo "compose-smoke: filter has its table (401 without a key) after $(ms) ms"
endpoints="$(curl -s http://127.0.0.1:9901/clusters | grep -oE '^(keygate_control_plane|demo_upstream)::[0-9.]+:[0-9]+' | sort -u)"
while read -r endpoint; do echo "compose-smoke: endpoint $endpoint"; done <<<"$endpoints"
[ "$(echo "$endpoints" | grep -c '^keygate_control_plane::')" = 2 ] || fail "control-plane did not give two endpoints"
echo "$endpoints" | grep -q '^demo_upstream::127.0.0.4:8081$' || fail "demo-upstream not resolved"

# A request Envoy sends to the address with nothing behind it gets a 503
# (envoy.yaml has no retry policy): retry as a client would.
key=""
for attempt in $(seq 1 20); do
  key="$(curl -s -X POST http://127.0.0.1:10000/api/v1/tenants -H 'content-type: application/json' \
    -d '{"name":"Acme","email":"dev@acme.example"}' | python3 -c 'import json,sys; print(json.load(sys.stdin).get("api_key",""))' 2>/dev/null || true)"
  [ -n "$key" ] && break
done
[ -n "$key" ] || fail "no tenant minted through Envoy"
echo "compose-smoke: tenant minted through Envoy at attempt $attempt"
until_status http://127.0.0.1:10000/api/v1/memory 200 -H "Authorization: Bearer $key"
grep -q '"x-key-id"' "$dir/body" || fail "the demo upstream did not see the key's identity"
echo "compose-smoke: a key minted through Envoy reaches the demo upstream (200) after $(ms) ms"
echo "compose-smoke: OK"
