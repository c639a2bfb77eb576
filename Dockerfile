# SageMaker bring-your-own-container inference image for TensorFlow on Graviton (linux/arm64).
# The same file also builds for linux/amd64 (TARGETARCH picks the lock file; on amd64 that is
# the tensorflow-cpu stack, the same image Dockerfile.x86 makes). Build with ./build.sh.
# No `# syntax=` line on purpose: the builder's built-in frontend has RUN --mount, and builds must
# work where no registry is reachable.
ARG BASE_IMAGE=debian:trixie-slim
FROM ${BASE_IMAGE}

# Debian's python3 (3.13) in a venv; these two steps are shared with container/lock.Dockerfile.
ENV PATH=/opt/venv/bin:$PATH
COPY container/install.sh /opt/container/install.sh
RUN sh /opt/container/install.sh system

# Pinned, hash-checked runtime requirements for the target architecture (tensorflow==2.21.0 on
# arm64, built with oneDNN + Arm Compute Library). pip's cache is a BuildKit cache mount (not in a
# layer); a proxy CA comes in as the secret pip_ca (not in a layer).
ARG TARGETARCH
COPY container/requirements-${TARGETARCH}.txt /opt/container/requirements.txt
RUN --mount=type=secret,id=pip_ca,required=false \
    --mount=type=cache,target=/root/.cache/pip \
    sh /opt/container/install.sh deps /opt/container/requirements.txt

# The serve package itself, without dependencies (they came from the lock).
RUN --mount=type=secret,id=pip_ca,required=false \
    --mount=type=bind,target=/tmp/context \
    sh /opt/container/install.sh project /tmp/context

COPY container/entrypoint.sh /opt/container/entrypoint.sh

# oneDNN (TF_ENABLE_ONEDNN_OPTS=1) and BF16 fast math (DNNL_DEFAULT_FPMATH_MODE=BF16 where the CPU
# has bf16 matrix units: Graviton3+, x86 AMX) are decided at start in one place, serve/tuning.py,
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
