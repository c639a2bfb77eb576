#!/bin/sh
# The serve package (with model_archive from deploy/), --no-deps (its dependencies came from the
# lock), built and installed in a build stage on the build machine's own platform (Dockerfile's
# `project`, after `deps`): the project is pure Python and .pyc files do not depend on the
# machine, so nothing of it needs emulation, and after a change to serve/ an arm64 image on an x86
# builder is rebuilt in seconds. It installs into OUT, laid out like the venv (OUT/bin,
# OUT/lib/python3.X/site-packages); the image's last layer copies OUT over /opt/venv.
# Whatever pyproject.toml lists as packages is what gets installed, from a copy of the whole of
# serve/ and deploy/model_archive/: a module or subpackage moved inside serve/ needs no change here.
#
#   project.sh SRCDIR OUT
set -eu
src=${1:?usage: project.sh SRCDIR OUT}
out=${2:?usage: project.sh SRCDIR OUT}
VENV=/opt/venv
if [ -s /run/secrets/pip_ca ]; then export PIP_CERT=/run/secrets/pip_ca; fi
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 PIP_ROOT_USER_ACTION=ignore

work=$(mktemp -d)
cp "$src/pyproject.toml" "$work/"
cp -r "$src/serve" "$work/serve"
mkdir -p "$work/deploy" && cp -r "$src/deploy/model_archive" "$work/deploy/model_archive"
# pyproject.toml names README.md as the long description; an empty one does as well here.
if [ -f "$src/README.md" ]; then cp "$src/README.md" "$work/"; else : > "$work/README.md"; fi
find "$work" -name '__pycache__' -prune -exec rm -rf {} +

site=$(cd "$VENV" && echo lib/python3*/site-packages)
# setuptools is already in the venv (TensorFlow requires it), pinned by the lock: no isolated
# build env, so nothing unpinned is fetched. The console script's first line names the venv's
# python (/opt/venv/bin/python3), the same path in the image.
"$VENV/bin/pip" install --no-deps --no-build-isolation --no-cache-dir --target "$out/$site" "$work"
mv "$out/$site/bin" "$out/bin" && rm -rf "$out/bin/__pycache__"
rm -rf "$work" /root/.cache /tmp/pip-*
[ -x "$out/bin/serve" ] || { echo "project.sh: no serve console script" >&2; exit 1; }
head -n 1 "$out/bin/serve" | grep -qx "#!$VENV/bin/python3*" ||
  { echo "project.sh: serve's first line is $(head -n 1 "$out/bin/serve"), not the venv's python" >&2; exit 1; }
# The package imports (standard library only at this level; the image's own python and its
# dependencies are checked by the image tests, not here on the build machine).
PYTHONPATH="$out/$site" python3 -c 'import serve, model_archive; print("serve", serve.__version__)'
