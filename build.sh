#!/usr/bin/env bash
# Builds the SageMaker TensorFlow inference image for Graviton (linux/arm64) and/or x86-64
# (linux/amd64) with docker buildx, and optionally pushes it (to any registry, or to Amazon ECR).
#
#   ./build.sh [--platform linux/arm64[,linux/amd64]] [--tag REPO:TAG] [--load | --push]
#              [--ecr ACCOUNT.dkr.ecr.REGION.amazonaws.com]
#
#   --platform  comma-separated target platforms (default: this host's, e.g. linux/amd64).
#               linux/arm64 builds Dockerfile, linux/amd64 builds Dockerfile.x86.
#   --tag       image reference (default sagemaker-tf-graviton:latest). With --ecr, a tag without
#               a registry part is put under the ECR registry.
#   --load      leave the image in the local Docker engine (default; one platform only).
#   --push      push to the tag's registry. Several platforms become one multi-arch manifest list:
#               a single buildx build when the builder can build several platforms at once,
#               otherwise one build per platform, pushed as TAG-<arch>, joined with
#               `docker buildx imagetools create`.
#   --ecr REG   implies --push: create the ECR repository if it is missing and log in to REG
#               (boto3 get_authorization_token; AWS_* environment and AWS_ENDPOINT_URL honoured).
#
# Environment: BASE_IMAGE (default in the Dockerfiles: debian:trixie-slim). A CA bundle for a
# TLS-inspecting proxy is taken from the first of PIP_CERT, REQUESTS_CA_BUNDLE, SSL_CERT_FILE that
# names a file, and handed to pip inside the build as the BuildKit secret `pip_ca` (never stored
# in a layer).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"

die() { printf 'build.sh: error: %s\n' "$*" >&2; exit 1; }
log() { printf '[build.sh %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
usage() { sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'; }

host_arch() {
  case "$(uname -m)" in
    x86_64 | amd64) echo amd64 ;;
    aarch64 | arm64) echo arm64 ;;
    *) uname -m ;;
  esac
}

platforms="linux/$(host_arch)"
tag="sagemaker-tf-graviton:latest"
mode=""
ecr=""
while [ $# -gt 0 ]; do
  case "$1" in
    --platform) [ $# -ge 2 ] || die "--platform needs a value"; platforms=$2; shift 2 ;;
    --platform=*) platforms=${1#*=}; shift ;;
    --tag) [ $# -ge 2 ] || die "--tag needs a value"; tag=$2; shift 2 ;;
    --tag=*) tag=${1#*=}; shift ;;
    --load) [ "$mode" != push ] || die "--load and --push exclude each other"; mode=load; shift ;;
    --push) [ "$mode" != load ] || die "--load and --push exclude each other"; mode=push; shift ;;
    --ecr) [ $# -ge 2 ] || die "--ecr needs a registry (ACCOUNT.dkr.ecr.REGION.amazonaws.com)"; ecr=$2; shift 2 ;;
    --ecr=*) ecr=${1#*=}; shift ;;
    -h | --help) usage; exit 0 ;;
    *) die "unknown argument '$1' (see ./build.sh --help)" ;;
  esac
done

# ---- arguments -----------------------------------------------------------------------------
IFS=',' read -r -a plats <<<"$platforms"
[ ${#plats[@]} -gt 0 ] || die "--platform is empty"
for p in "${plats[@]}"; do
  case "$p" in
    linux/arm64 | linux/amd64) ;;
    *) die "unsupported platform '$p' (use linux/arm64 and/or linux/amd64)" ;;
  esac
done
if [ -n "$ecr" ]; then
  [ "$mode" != load ] || die "--ecr pushes; it cannot be combined with --load"
  mode=push
  [[ "$ecr" =~ ^([0-9]{12})\.dkr\.ecr(-fips)?\.([a-z0-9-]+)\.amazonaws\.com(\.cn)?$ ]] ||
    die "--ecr '$ecr' is not an ECR registry (ACCOUNT.dkr.ecr.REGION.amazonaws.com)"
  ecr_region=${BASH_REMATCH[3]}
  first=${tag%%/*}
  if [[ "$tag" != */* ]] || [[ "$first" != *.* && "$first" != *:* && "$first" != localhost ]]; then
    tag="$ecr/$tag"
  fi
fi
[ -n "$mode" ] || mode=load
if [ "$mode" = load ] && [ ${#plats[@]} -gt 1 ]; then
  die "--load takes one platform (the local engine stores one per tag); use --push for several"
fi
[[ "$tag" == *:* && "${tag##*:}" != */* ]] || tag="$tag:latest"
repo=${tag%:*}
tag_only=${tag##*:}

dockerfile_for() {
  case "$1" in
    linux/amd64) echo Dockerfile.x86 ;;
    *) echo Dockerfile ;;
  esac
}

# ---- pre-flight checks: fail before any work -----------------------------------------------
command -v docker >/dev/null 2>&1 || die "the docker CLI is not installed"
docker info >/dev/null 2>&1 ||
  die "no Docker engine answers (docker info failed${DOCKER_HOST:+ for DOCKER_HOST=$DOCKER_HOST}); start dockerd or Docker Desktop"
docker buildx version >/dev/null 2>&1 ||
  die "the docker buildx plugin is missing (install docker-buildx / docker-buildx-plugin)"

builder_info=$(docker buildx inspect 2>/dev/null) || die "docker buildx inspect failed: no usable builder"
driver=$(awk -F': *' '/^Driver:/{print $2; exit}' <<<"$builder_info")
builder_platforms=$(awk -F': *' '/^Platforms:/{print $2; exit}' <<<"$builder_info" | tr -d ' *')
native="linux/$(host_arch)"
for p in "${plats[@]}"; do
  [ "$p" = "$native" ] && continue
  if [[ ",$builder_platforms," != *",$p,"* ]]; then
    qarch=$([ "$p" = linux/arm64 ] && echo aarch64 || echo x86_64)
    short=${p#linux/}
    die "the builder cannot run $p code (platforms: ${builder_platforms:-none}); register qemu emulation, e.g.
  docker run --privileged --rm tonistiigi/binfmt --install $short
or, on Debian/Ubuntu: apt-get install qemu-user-static binfmt-support && update-binfmts --enable qemu-$qarch"
  fi
done

for f in Dockerfile Dockerfile.x86 container/system.sh container/deps.sh container/slim.sh container/project.sh \
         container/entrypoint.sh; do
  [ -f "$f" ] || die "$f is missing (run build.sh from a complete checkout)"
done
for p in "${plats[@]}"; do
  lock="container/requirements-${p#linux/}.txt"
  [ -f "$lock" ] || die "$lock is missing (generate it with container/lock.sh ${p#linux/})"
done

# Python with boto3 for the ECR steps: the project's venv if there is one, else python3.
aws_python() {
  local py
  for py in .venv/bin/python python3; do
    if command -v "$py" >/dev/null 2>&1 && "$py" -c 'import boto3' 2>/dev/null; then
      echo "$py"
      return 0
    fi
  done
  return 1
}

if [ -n "$ecr" ]; then
  py=$(aws_python) || die "--ecr needs Python with boto3 (make venv, or pip install boto3)"
  ecr_repo=${repo#*/}
  log "ECR: ensuring repository '$ecr_repo' in $ecr_region"
  "$py" - "$ecr_region" "$ecr_repo" <<'PY' || die "could not create or find the ECR repository (see above)"
import sys, boto3
region, name = sys.argv[1:3]
ecr = boto3.client("ecr", region_name=region)
try:
    ecr.describe_repositories(repositoryNames=[name])
except ecr.exceptions.RepositoryNotFoundException:
    ecr.create_repository(repositoryName=name, imageScanningConfiguration={"scanOnPush": True})
    print(f"created ECR repository {name}", file=sys.stderr)
PY
  log "ECR: logging in to $ecr"
  # The password goes from boto3 straight into docker login's stdin: never echoed or stored here.
  if ! "$py" - "$ecr_region" <<'PY' | docker login --username AWS --password-stdin "$ecr" >/dev/null; then
import base64, sys, boto3
token = boto3.client("ecr", region_name=sys.argv[1]).get_authorization_token()
data = token["authorizationData"][0]
user, _, password = base64.b64decode(data["authorizationToken"]).decode().partition(":")
sys.stdout.write(password)
PY
    die "the registry $ecr refused the login or could not be reached (docker's message above; check AWS credentials, region, ecr:GetAuthorizationToken permission, network)"
  fi
fi

# ---- build ---------------------------------------------------------------------------------
common=(--provenance=false)
docker buildx build --help 2>/dev/null | grep -q -- '--provenance' || common=()
if [ -n "${BASE_IMAGE:-}" ]; then
  common+=(--build-arg "BASE_IMAGE=$BASE_IMAGE")
fi
for f in "${PIP_CERT:-}" "${REQUESTS_CA_BUNDLE:-}" "${SSL_CERT_FILE:-}"; do
  if [ -n "$f" ] && [ -f "$f" ]; then
    common+=(--secret "id=pip_ca,src=$f")
    log "passing CA bundle $f to pip as build secret pip_ca"
    break
  fi
done
[ -n "${BUILD_PROGRESS:-}" ] && common+=(--progress "$BUILD_PROGRESS")

build_one() {  # build_one PLATFORM REF OUTPUT-FLAG
  local p=$1 ref=$2 out=$3 df t0
  df=$(dockerfile_for "$p")
  log "building $ref for $p from $df (base ${BASE_IMAGE:-debian:trixie-slim})"
  t0=$SECONDS
  docker buildx build --platform "$p" -f "$df" -t "$ref" "$out" "${common[@]}" .
  log "built $ref for $p in $((SECONDS - t0)) s"
}

multi=0
[ ${#plats[@]} -gt 1 ] && multi=1
if [ "$mode" = load ]; then
  build_one "${plats[0]}" "$tag" --load
elif [ $multi = 0 ]; then
  build_one "${plats[0]}" "$tag" --push
elif [ "$driver" != docker ]; then
  # A docker-container/kubernetes/remote builder builds every platform in one call. One
  # Dockerfile serves both (it picks the lock by TARGETARCH; amd64 gets tensorflow-cpu).
  log "building ${platforms} in one call with the $driver builder"
  t0=$SECONDS
  docker buildx build --platform "$platforms" -f Dockerfile -t "$tag" --push "${common[@]}" .
  log "built ${platforms} in $((SECONDS - t0)) s"
else
  # The docker driver builds one platform per call: push each as TAG-<arch>, then join.
  parts=()
  for p in "${plats[@]}"; do
    build_one "$p" "$repo:$tag_only-${p#linux/}" --push
    parts+=("$repo:$tag_only-${p#linux/}")
  done
  log "joining ${parts[*]} into the manifest list $tag"
  docker buildx imagetools create -t "$tag" "${parts[@]}"
fi

# ---- report --------------------------------------------------------------------------------
echo "image: $tag"
if [ "$mode" = load ]; then
  docker image inspect -f '{{.Os}}/{{.Architecture}}: {{.Id}} ({{.Size}} bytes, local image ID)' "$tag"
else
  # {{json .Manifest}}: buildx 0.13 ignores templates that read .Manifest fields directly.
  docker buildx imagetools inspect "$tag" --format '{{json .Manifest}}' | python3 -c '
import json, sys
m = json.load(sys.stdin)
print("digest:", m["digest"])
for d in m.get("manifests") or []:
    p = d.get("platform") or {}
    if p.get("os", "unknown") != "unknown":
        arch = p["architecture"] + ("/" + p["variant"] if p.get("variant") else "")
        print("%s/%s: %s" % (p["os"], arch, d["digest"]))
if not m.get("manifests"):
    print(sys.argv[1] + ":", m["digest"])
' "${plats[0]}"
fi
