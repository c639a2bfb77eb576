#!/bin/sh
# Trims the runtime stack that container/deps.sh installed, in a build stage that runs on the
# build machine's own architecture (Dockerfile's `slim`, after `deps`): no emulation, so
# stripping ~1 GB of arm64 libraries takes seconds on an x86 builder.
#
#   slim.sh tools ARCH      binutils that read ARCH's (arm64 | amd64) ELF files
#   slim.sh venv DIR ARCH   trim the venv DIR in place
#
# What goes, and why serving does not miss it (docs/images.md has the figures):
#   - symbol tables of shared libraries (strip --strip-unneeded): TensorFlow's wheels ship them
#     unstripped (.symtab/.strtab: ~270 MB of libtensorflow_cc.so.2 alone). Only the dynamic
#     symbols are used to load and link; those stay. Backtraces from native code lose names.
#   - tensorflow/include: C++ headers, for compiling custom ops (no compiler in the image).
#   - tensorflow/xla_aot_runtime_src: sources for tfcompile's ahead-of-time runtime.
#   - libclang's libclang.so: the tensorflow wheel requires libclang (its metadata), but only its
#     build tooling uses it. Its dist-info stays, so pip check holds and a user's
#     requirements.txt naming a TensorFlow add-on does not make pip download it again at start.
#   - static libraries (*.a: numpy's npymath/npyrandom), for compiling against numpy.
#   - the test suites of numpy, h5py and opt_einsum (their tests/ folders, ~15 MB; only
#     numpy.test() and h5py.run_tests() load them). TensorFlow's and Keras's test helpers stay:
#     parts of their API import them.
# The venv keeps pip, setuptools (build backend of the project step and of users' sdists), every
# Python module and its .pyc (TensorFlow's import would otherwise compile them on every start).
set -eu

strip_for() {
  case "$1" in
    arm64) echo aarch64-linux-gnu-strip ;;
    amd64) echo x86_64-linux-gnu-strip ;;
    *) echo "slim.sh: unknown architecture '$1' (arm64 or amd64)" >&2; exit 2 ;;
  esac
}

megabytes() { du -sm "$1" | cut -f1; }

case "${1:-}" in
  tools)
    arch=${2:?usage: slim.sh tools ARCH}
    tool=$(strip_for "$arch")
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # binutils-aarch64-linux-gnu / binutils-x86-64-linux-gnu: native or cross, whichever the
    # build machine is.
    apt-get install -y -qq --no-install-recommends "binutils-$(echo "${tool%-strip}" | tr _ -)" >/dev/null
    rm -rf /var/lib/apt/lists/*
    "$tool" --version | head -n 1
    ;;
  venv)
    dst=${2:?usage: slim.sh venv DIR ARCH}
    tool=$(strip_for "${3:?usage: slim.sh venv DIR ARCH}")
    site=$(echo "$dst"/lib/python3*/site-packages)
    [ -d "$site/tensorflow" ] || { echo "slim.sh: no tensorflow in $site" >&2; exit 1; }
    before=$(megabytes "$dst")
    rm -rf "$site/tensorflow/include" "$site/tensorflow/xla_aot_runtime_src"
    rm -f "$site"/clang/native/libclang*.so*
    find "$dst" -type f -name '*.a' -delete
    find "$site/numpy" "$site/h5py" "$site/opt_einsum" -depth -type d -name tests -exec rm -rf {} +
    stripped=0
    for f in $(find "$dst" -type f \( -name '*.so' -o -name '*.so.*' \)); do
      # ELF files only (the magic number).
      if [ "$(head -c 4 "$f" | tail -c 3)" = ELF ]; then
        "$tool" --strip-unneeded "$f"
        stripped=$((stripped + 1))
      fi
    done
    echo "slim.sh: $dst $before MB -> $(megabytes "$dst") MB ($stripped shared libraries stripped)"
    ;;
  *)
    echo "usage: slim.sh tools ARCH | venv DIR ARCH" >&2
    exit 2
    ;;
esac
