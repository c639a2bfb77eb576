#!/bin/sh
# The image's system layer (Dockerfile, Dockerfile.x86, container/lock.Dockerfile): Debian's
# python3 (3.13); python3-venv for the venv that container/deps.sh makes (and its ensurepip pip);
# ca-certificates, which pip (code/requirements.txt at start) and boto3 need at run time.
# Nothing else: no compilers, no -dev packages, no apt lists left behind.
# Each install step is a script of its own, so that editing one reruns only its own layer and
# the ones after it (container/project.sh, the last, never reinstalls TensorFlow).
set -eu
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends python3 python3-venv ca-certificates >/dev/null
apt-get clean
rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/apt/* /var/log/dpkg.log \
       /var/cache/debconf/*-old /root/.cache
python3 --version
