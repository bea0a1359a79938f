#!/usr/bin/env bash
# Provides the infrastructure images dronectl apps use, built locally: on these machines no
# registry can be reached, so `redis:7` cannot be pulled. It is packed from Debian's
# /usr/bin/redis-server with `dronectl image pack` (the binary, its shared-library closure and
# the dynamic loader, about 18 MB) and tagged `redis:7` directly, so a manifest's
# `image: redis:7` works unchanged.
#
# Debian's redis-server defaults to protected mode, which refuses connections from other
# containers; the official image disables it at compile time. Here the image's ENTRYPOINT is
# a shell wrapper (Debian's /bin/sh, packed with its libraries) that appends
# `--protected-mode no` to whatever command runs, so a manifest's
#   command: ["redis-server", "--appendonly", "yes"]
# works as with the official image. The default CMD is redis-server itself. It runs as uid
# 65532 with /data (owned by that user) as its working directory, so a volume mounted on
# /data is writable.
#
# Usage: scripts/infra-images.sh          (DRONECTL=path/to/dronectl to use another binary)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
if [ -z "${DRONECTL:-}" ]; then
  cargo build -q --bin dronectl
  DRONECTL="$CARGO_TARGET_DIR/debug/dronectl"
fi
if ! command -v redis-server >/dev/null; then
  sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq redis-server >/dev/null
fi
"$DRONECTL" --no-progress image pack "$(command -v redis-server)" --tag redis:7 \
  --include /bin/sh \
  --entrypoint /bin/sh --entrypoint -c --entrypoint 'exec "$@" --protected-mode no' --entrypoint redis \
  --expose 6379 --workdir /data
