# Resolves container/requirements-<arch>.txt inside the image's own base on the target platform.
# Used by container/lock.sh only; its first stage is the same as Dockerfile's, so they share its
# layer cache.
ARG BASE_IMAGE=debian:trixie-slim
FROM ${BASE_IMAGE} AS resolve
ENV PATH=/opt/venv/bin:$PATH
COPY container/system.sh /opt/container/system.sh
RUN sh /opt/container/system.sh
RUN --mount=type=secret,id=pip_ca,required=false \
    --mount=type=cache,target=/root/.cache/pip \
    --mount=type=bind,source=pyproject.toml,target=/tmp/lock/pyproject.toml \
    --mount=type=bind,source=container/lock.py,target=/tmp/lock/lock.py \
    if [ -s /run/secrets/pip_ca ]; then export PIP_CERT=/run/secrets/pip_ca; fi; \
    python3 -m venv /opt/venv && mkdir /out && python /tmp/lock/lock.py /tmp/lock/pyproject.toml > /out/requirements.txt

FROM scratch
COPY --from=resolve /out/requirements.txt /
