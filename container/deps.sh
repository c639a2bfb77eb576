#!/bin/sh
# The runtime stack, in a build stage of its own (Dockerfile's `deps`) that runs on the build
# machine's own platform: a venv at /opt/venv with the fully pinned, hash-checked lock of the
# TARGET architecture. For another architecture than the build machine's (arm64 on an x86
# builder), pip installs that architecture's wheels (--platform, --target): unpacking and
# compiling TensorFlow's Python then runs natively, not under qemu (minutes, not a quarter hour).
# The venv is the same either way: the same Debian python3 (3.13) at the same path on both, and
# .pyc files do not depend on the machine. container/slim.sh then trims it and the image takes it;
# the image build ends with `pip check` in the target image (container/project.sh).
#
#   deps.sh LOCKFILE ARCH        ARCH: arm64 | amd64, the image's architecture
#
# pip's cache lives in a BuildKit cache mount (/root/.cache/pip), never in a layer. Behind a
# TLS-inspecting proxy the build gets the proxy's CA as the BuildKit secret `pip_ca` (build.sh
# passes it); pip reads it from /run/secrets/pip_ca, so it never lands in a layer.
set -eu
lock=${1:?usage: deps.sh LOCKFILE ARCH}
arch=${2:?usage: deps.sh LOCKFILE ARCH}
VENV=/opt/venv
if [ -s /run/secrets/pip_ca ]; then export PIP_CERT=/run/secrets/pip_ca; fi
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 PIP_ROOT_USER_ACTION=ignore

case "$arch" in
  arm64) machine=aarch64 ;;
  amd64) machine=x86_64 ;;
  *) echo "deps.sh: unknown architecture '$arch' (arm64 or amd64)" >&2; exit 2 ;;
esac

# pip comes from Debian's ensurepip; it stays in the image (serve installs code/requirements.txt
# with it at start).
python3 -m venv "$VENV"
# --require-hashes: every wheel must match the lock's sha256; --no-deps: the lock is complete
# (pip check proves it); --only-binary: no compiler in the image, no sdist surprises.
if [ "$(uname -m)" = "$machine" ]; then
  "$VENV/bin/pip" install --require-hashes --no-deps --only-binary=:all: -r "$lock"
  "$VENV/bin/pip" check
else
  # The wheel tags a Debian trixie (glibc 2.41) of that architecture accepts (as container/lock.py).
  set -- --platform "manylinux2014_$machine"
  for minor in $(seq 17 41); do set -- "$@" --platform "manylinux_2_${minor}_$machine"; done
  site=$(echo "$VENV"/lib/python3*/site-packages)
  "$VENV/bin/pip" install --require-hashes --no-deps --only-binary=:all: "$@" --target "$site" -r "$lock"
  # --target puts console scripts beside the packages; a venv has them in bin/.
  if [ -d "$site/bin" ]; then mv "$site/bin/"* "$VENV/bin/" && rmdir "$site/bin"; fi
fi
