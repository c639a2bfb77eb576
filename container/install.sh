#!/bin/sh
# The install steps shared by Dockerfile (Graviton, any arch) and Dockerfile.x86: one place, three
# stages, each its own layer so that a change to serve/ does not reinstall TensorFlow.
#
#   install.sh system            Debian's python3 (3.13) and a venv at /opt/venv
#   install.sh deps LOCKFILE     the fully pinned, hash-checked runtime requirements (wheels only)
#   install.sh project SRCDIR    the serve package itself, --no-deps (its deps came from the lock)
#
# pip's cache lives in a BuildKit cache mount (/root/.cache/pip), never in a layer. Behind a
# TLS-inspecting proxy the build gets the proxy's CA as the BuildKit secret `pip_ca`
# (build.sh passes it); pip reads it from /run/secrets/pip_ca, so it never lands in a layer.
set -eu

VENV=${VENV:-/opt/venv}
PIP="$VENV/bin/pip"

use_build_ca() {
  if [ -s /run/secrets/pip_ca ]; then
    export PIP_CERT=/run/secrets/pip_ca
  fi
  export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 PIP_ROOT_USER_ACTION=ignore
}

case "${1:-}" in
  system)
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # python3-venv brings ensurepip's bundled pip; ca-certificates is needed at run time by pip
    # (code/requirements.txt) and boto3. Nothing else: no compilers, no -dev packages.
    apt-get install -y -qq --no-install-recommends python3 python3-venv ca-certificates >/dev/null
    python3 -m venv "$VENV"
    apt-get clean
    rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/apt/* /var/log/dpkg.log \
           /var/cache/debconf/*-old /root/.cache
    "$VENV/bin/python" --version
    ;;
  deps)
    lock=${2:?usage: install.sh deps LOCKFILE}
    use_build_ca
    # --require-hashes: every wheel must match the lock's sha256; --no-deps: the lock is complete
    # (pip check below proves it); --only-binary: no compiler in the image, no sdist surprises.
    "$PIP" install --require-hashes --no-deps --only-binary=:all: -r "$lock"
    "$PIP" check
    ;;
  project)
    src=${2:?usage: install.sh project SRCDIR}
    use_build_ca
    work=$(mktemp -d)
    cp "$src/pyproject.toml" "$work/"
    cp -r "$src/serve" "$work/serve"
    mkdir -p "$work/deploy" && cp -r "$src/deploy/model_archive" "$work/deploy/model_archive"
    # pyproject.toml names README.md as the long description; an empty one does as well here.
    if [ -f "$src/README.md" ]; then cp "$src/README.md" "$work/"; else : > "$work/README.md"; fi
    find "$work" -name '__pycache__' -prune -exec rm -rf {} +
    # setuptools is already in the venv (TensorFlow requires it), pinned by the lock: no
    # isolated build env, so nothing unpinned is fetched.
    "$PIP" install --no-deps --no-build-isolation --no-cache-dir "$work"
    rm -rf "$work"
    "$PIP" check
    # Import the package (not TensorFlow: that takes ~15 s under emulation) to catch a broken install.
    "$VENV/bin/python" -c 'import serve, model_archive, sys; print("serve", serve.__version__, "python", sys.version.split()[0])'
    command -v serve >/dev/null || { echo "install.sh: no serve console script" >&2; exit 1; }
    rm -rf /root/.cache /tmp/pip-*
    ;;
  *)
    echo "usage: install.sh system | deps LOCKFILE | project SRCDIR" >&2
    exit 2
    ;;
esac
