#!/usr/bin/env bash
# Regenerates container/requirements-<arch>.txt (fully pinned, with hashes) from pyproject.toml,
# resolving inside the image's base on each target platform (arm64 under emulation on x86 hosts).
# Usage: container/lock.sh [amd64] [arm64]      (default: both); BASE_IMAGE honoured from env.
set -euo pipefail
cd "$(dirname "$0")/.."
archs=("$@"); [ ${#archs[@]} -gt 0 ] || archs=(amd64 arm64)
args=()
[ -n "${BASE_IMAGE:-}" ] && args+=(--build-arg "BASE_IMAGE=$BASE_IMAGE")
for f in "${PIP_CERT:-}" "${REQUESTS_CA_BUNDLE:-}" "${SSL_CERT_FILE:-}"; do
  if [ -n "$f" ] && [ -f "$f" ]; then args+=(--secret "id=pip_ca,src=$f"); break; fi
done
for arch in "${archs[@]}"; do
  out=$(mktemp -d)
  docker buildx build --platform "linux/$arch" -f container/lock.Dockerfile "${args[@]}" \
    --output "type=local,dest=$out" .
  mv "$out/requirements.txt" "container/requirements-$arch.txt"
  rm -rf "$out"
  echo "wrote container/requirements-$arch.txt ($(grep -c '==' "container/requirements-$arch.txt") packages)"
done
