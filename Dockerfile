# SageMaker bring-your-own-container inference image for TensorFlow on Graviton (linux/arm64).
# The same file also builds for linux/amd64 (TARGETARCH picks the lock file; on amd64 that is
# the tensorflow-cpu stack, the same image Dockerfile.x86 makes). Build with ./build.sh.
# No `# syntax=` line on purpose: the builder's built-in frontend has RUN --mount, and builds must
# work where no registry is reachable.
#
# Layers follow what changes (docs/images.md): Debian's python3, then the trimmed runtime stack
# (TensorFlow: installed in the `deps` stage, trimmed natively in `slim`), then metadata, and last
# the project itself. Each step is a script of its own in container/, so editing one reruns only
# its layer and those after it; a change to serve/ reruns only the last layer.
ARG BASE_IMAGE=debian:trixie-slim

FROM ${BASE_IMAGE} AS python
ENV PATH=/opt/venv/bin:$PATH
COPY container/system.sh /opt/container/system.sh
RUN sh /opt/container/system.sh

# Pinned, hash-checked runtime requirements for the target architecture (tensorflow==2.21.0 on
# arm64, built with oneDNN + Arm Compute Library). pip's cache is a BuildKit cache mount (not in a
# layer); a proxy CA comes in as the secret pip_ca (not in a layer). Installed on the build machine's own platform: pip takes the target's wheels (container/deps.sh),
# so an arm64 image built on x86 unpacks and compiles TensorFlow natively, not under qemu. Its first
# two steps are the python stage's on that platform (one cache).
FROM --platform=${BUILDPLATFORM} ${BASE_IMAGE} AS deps
ENV PATH=/opt/venv/bin:$PATH
COPY container/system.sh /opt/container/system.sh
RUN sh /opt/container/system.sh
ARG TARGETARCH
COPY container/requirements-${TARGETARCH}.txt /opt/container/requirements.txt
COPY container/deps.sh /opt/container/deps.sh
RUN --mount=type=secret,id=pip_ca,required=false \
    --mount=type=cache,target=/root/.cache/pip \
    sh /opt/container/deps.sh /opt/container/requirements.txt "${TARGETARCH}"

# Trimmed there too: symbol tables stripped, C++ headers and other build-only files removed
# (container/slim.sh says what and why).
FROM deps AS slim
ARG TARGETARCH
COPY container/slim.sh /opt/container/slim.sh
RUN sh /opt/container/slim.sh tools "${TARGETARCH}" && sh /opt/container/slim.sh venv /opt/venv "${TARGETARCH}"

# The project, without dependencies (they came from the lock), from the bind-mounted context
# (the image keeps no copy of the source). Rebuilt whenever the context changes; only its result,
# the image's last layer, changes with it.
FROM deps AS project
RUN --mount=type=secret,id=pip_ca,required=false \
    --mount=type=bind,target=/tmp/context \
    sh /tmp/context/container/project.sh /tmp/context /opt/project

FROM python
COPY --from=slim /opt/venv /opt/venv
COPY container/entrypoint.sh /opt/container/entrypoint.sh

# oneDNN (TF_ENABLE_ONEDNN_OPTS=1) and BF16 fast math (DNNL_DEFAULT_FPMATH_MODE=BF16 where the CPU
# has bf16 matrix units: Graviton3+, x86 AMX) are decided at start in one place, serve's tuning module,
# and shown on the start line; a CreateModel Environment (or docker run -e) overrides them.
ENV VIRTUAL_ENV=/opt/venv \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

LABEL com.amazonaws.sagemaker.capabilities.accept-bind-to-port=true \
      com.amazonaws.sagemaker.capabilities.multi-models=true \
      org.opencontainers.image.title="sagemaker-tf-graviton" \
      org.opencontainers.image.description="SageMaker inference server for TensorFlow models (Graviton/arm64 and x86-64)"

# Runs as root, as SageMaker's own containers do (it mounts /opt/ml/model read-only either way).
EXPOSE 8080
WORKDIR /opt/ml
# Exec form: `docker run IMAGE serve` makes the entrypoint exec `serve`, which becomes PID 1 and
# gets SageMaker's SIGTERM directly.
ENTRYPOINT ["/opt/container/entrypoint.sh"]
CMD ["serve"]

# Last: the serve package itself, built on the build machine's own platform from the bind-mounted
# context (container/project.sh; pure Python, so no emulation), copied over the venv.
COPY --from=project /opt/project/ /opt/venv/
