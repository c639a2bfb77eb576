#!/usr/bin/env bash
# Prepares a machine that has no Docker engine, no route to Docker Hub and a TLS-inspecting
# proxy (the CI and development machines of this project) for `make test`. Idempotent: each
# step is skipped when its result is already there. The product files (Dockerfiles, build.sh)
# do not know about any of this; they are what a user with Docker Hub and AWS runs.
set -euo pipefail

REGISTRY_PORT=${REGISTRY_PORT:-5000}
BASE_TAG=${BASE_TAG:-127.0.0.1:${REGISTRY_PORT}/debian:trixie-slim}
STATE=${SM_TF_CI_STATE:-/var/tmp/sm-tf-ci}   # overridable to try a cold base build beside a warm one
mkdir -p "$STATE"
log() { printf '[setup %(%H:%M:%S)T] %s\n' -1 "$*"; }

apt_updated=
apt_install() {
  local missing=()
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ -z "$apt_updated" ]; then apt-get update -qq; apt_updated=1; fi
  log "apt-get install ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# 1. Docker engine, emulation, base-image tools (mmdebstrap needs arch-test for a foreign architecture), registry, load generator, Java for the MMS peer.
apt_install docker.io qemu-user-static binfmt-support mmdebstrap arch-test docker-registry wrk ca-certificates docker-compose

# 5a. The base image's two root filesystems (step 5) are the long pole of a cold setup: start
# them now, beside the engine, buildx and registry steps (they need none of those).
# mmdebstrap's root mode, like debootstrap, installs a minbase trixie with the target's own
# dpkg in a chroot (under qemu for arm64), so the tree is the same (compared file by file with
# debootstrap's: only timestamps and bootstrap logs differ), but it unpacks every package once,
# where debootstrap unpacks the core packages, then the required ones, then the rest in passes
# (arm64, both run at the same time on a shared 2-core machine: debootstrap 982 s, mmdebstrap
# 760 s). The two architectures run at once: amd64's is download- and disk-bound (147 s),
# arm64's one emulated core.
ctx="$STATE/base-ctx"
rootfs_pids=()
if ! docker buildx imagetools inspect "$BASE_TAG" >/dev/null 2>&1; then
  mkdir -p "$ctx"
  for arch in amd64 arm64; do
    [ -s "$ctx/rootfs-$arch.tar" ] && continue
    log "mmdebstrap trixie $arch (log $STATE/mmdebstrap-$arch.log)"
    ( mmdebstrap --mode=root --format=tar --variant=minbase --arch=$arch trixie "$ctx/rootfs-$arch.tar.tmp" \
        >"$STATE/mmdebstrap-$arch.log" 2>&1 && mv "$ctx/rootfs-$arch.tar.tmp" "$ctx/rootfs-$arch.tar"
      log "rootfs $arch done" ) &
    rootfs_pids+=($!)
  done
fi

if ! docker info >/dev/null 2>&1; then
  log "starting dockerd"
  setsid dockerd --host unix:///var/run/docker.sock >/var/log/dockerd.log 2>&1 < /dev/null &
  for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { echo "dockerd did not start, see /var/log/dockerd.log" >&2; exit 1; }
fi

# 2. buildx: Debian 12 has no package; take trixie's static binary through a private apt config.
if ! docker buildx version >/dev/null 2>&1; then
  d=/var/cache/trixie-apt; mkdir -p $d/lists/partial $d/archives/partial
  uri=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources)
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $uri trixie main" > $d/sources.list
  o="-oDir::Etc::SourceList=$d/sources.list -oDir::Etc::SourceParts=/dev/null -oDir::State::Lists=$d/lists -oDir::Cache::Archives=$d/archives"
  log "installing docker-buildx from trixie"
  apt-get $o update -qq && (cd $d && apt-get $o download docker-buildx >/dev/null) && dpkg -i $d/docker-buildx_*.deb >/dev/null
fi

# 3. arm64 user-mode emulation (flag F so it works inside containers).
mountpoint -q /proc/sys/fs/binfmt_misc || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
[ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || update-binfmts --enable qemu-aarch64

# 4. Local registry on loopback (stand-in for ECR, and home of the base image).
if ! curl -fsS "http://127.0.0.1:${REGISTRY_PORT}/v2/" >/dev/null 2>&1; then
  cat > "$STATE/registry.yml" <<YML
version: 0.1
storage: {filesystem: {rootdirectory: /var/tmp/registry}, delete: {enabled: true}}
http: {addr: 127.0.0.1:${REGISTRY_PORT}}
log: {level: warn}
YML
  log "starting docker-registry on 127.0.0.1:${REGISTRY_PORT}"
  setsid docker-registry serve "$STATE/registry.yml" >/var/log/sm-tf-registry.log 2>&1 < /dev/null &
  for _ in $(seq 30); do curl -fsS "http://127.0.0.1:${REGISTRY_PORT}/v2/" >/dev/null 2>&1 && break; sleep 1; done
fi

# 5. debian:trixie-slim equivalent from Debian's packages (5a), as one multi-arch tag in the registry.
if ! docker buildx imagetools inspect "$BASE_TAG" >/dev/null 2>&1; then
  for pid in "${rootfs_pids[@]}"; do
    wait "$pid" || { echo "mmdebstrap failed, see $STATE/mmdebstrap-*.log" >&2; exit 1; }
  done
  printf 'FROM scratch\nARG TARGETARCH\nADD rootfs-${TARGETARCH}.tar /\nCMD ["bash"]\n' > "$ctx/Dockerfile"
  for arch in amd64 arm64; do
    [ -s "$ctx/rootfs-$arch.tar" ] || { echo "no root filesystem for $arch in $ctx" >&2; exit 1; }
    docker buildx build -q --platform linux/$arch -t "$BASE_TAG-$arch" --load "$ctx" >/dev/null
    docker push -q "$BASE_TAG-$arch" >/dev/null
  done
  docker buildx imagetools create -t "$BASE_TAG" "$BASE_TAG-amd64" "$BASE_TAG-arm64"
fi
log "ready: docker $(docker version -f '{{.Server.Version}}'), buildx, qemu-aarch64, registry 127.0.0.1:${REGISTRY_PORT}, BASE_IMAGE=$BASE_TAG"
