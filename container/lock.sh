#!/usr/bin/env bash
# Regenerates container/requirements-<arch>.txt (fully pinned, with hashes) from pyproject.toml.
#
#   container/lock.sh [amd64] [arm64]   resolve each inside the image's base on that platform
#                                       (container/lock.Dockerfile; arm64 runs under qemu on an
#                                       x86 host: thorough but slow, ~10-20 min there)
#   container/lock.sh --cross           resolve this host's arch that way, then derive the other
#                                       arch's lock from its pins by pip's cross-platform download
#                                       (seconds; assumes the same dependency set on both, which
#                                       holds for this stack and the image build's pip check proves)
# BASE_IMAGE is honoured from the environment; a proxy CA from PIP_CERT, REQUESTS_CA_BUNDLE or
# SSL_CERT_FILE is passed to pip as the BuildKit secret pip_ca.
set -euo pipefail
cd "$(dirname "$0")/.."
native=$(uname -m | sed -e 's/x86_64/amd64/' -e 's/aarch64/arm64/')
cross=0
archs=()
for a in "$@"; do
  case "$a" in
    --cross) cross=1 ;;
    amd64 | arm64) archs+=("$a") ;;
    *) echo "usage: container/lock.sh [--cross] [amd64] [arm64]" >&2; exit 2 ;;
  esac
done
if [ $cross = 1 ]; then archs=("$native"); elif [ ${#archs[@]} -eq 0 ]; then archs=(amd64 arm64); fi

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
if [ $cross = 1 ]; then
  other=$([ "$native" = amd64 ] && echo arm64 || echo amd64)
  py=python3
  [ -x .venv/bin/python ] && py=.venv/bin/python
  "$py" container/lock.py derive "container/requirements-$native.txt" "$other" > "container/requirements-$other.txt.tmp"
  mv "container/requirements-$other.txt.tmp" "container/requirements-$other.txt"
  echo "wrote container/requirements-$other.txt ($(grep -c '==' "container/requirements-$other.txt") packages, derived)"
fi
