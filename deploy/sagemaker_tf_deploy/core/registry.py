"""Which CPU architectures an image reference offers, read from its registry.

- ECR (ACCOUNT.dkr.ecr.REGION.amazonaws.com/...): the ECR API, `batch_get_image` with the
  manifest media types accepted, and `get_download_url_for_layer` for a single manifest's config
  blob. No docker login, so no registry password is ever handled.
- Any other registry: the Docker Registry HTTP API v2 over requests (anonymous bearer tokens when
  the registry asks for them; plain http for loopback registries such as 127.0.0.1:5000).

A manifest list / OCI index gives its platforms; a single manifest gives the architecture in its
config blob.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import requests

from ..core.aws import error_message
from ..core.errors import DeployError, UsageError

MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
ACCEPT = [OCI_INDEX, MANIFEST_LIST, OCI_MANIFEST, MANIFEST_V2]

_ECR_HOST = re.compile(
    r"^(?P<account>\d{12})\.dkr\.ecr(?:-fips)?\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(?:\.cn)?$")
_ARCH_ALIASES = {"aarch64": "arm64", "arm64/v8": "arm64", "x86_64": "amd64", "x86-64": "amd64"}
TIMEOUT = 30


@dataclass(frozen=True)
class ImageRef:
    registry: str       # host[:port] as written ("docker.io" when none was)
    repository: str
    reference: str      # tag or digest

    @property
    def is_digest(self) -> bool:
        return self.reference.startswith("sha256:")

    @property
    def ecr(self) -> re.Match | None:
        return _ECR_HOST.match(self.registry)

    def __str__(self) -> str:
        sep = "@" if self.is_digest else ":"
        return f"{self.registry}/{self.repository}{sep}{self.reference}"


def parse(image: str) -> ImageRef:
    """Split REGISTRY/REPO[:TAG][@DIGEST] the way docker does."""
    if not image or any(c.isspace() for c in image):
        raise DeployError(f"invalid image reference {image!r}")
    rest, digest = (image.split("@", 1) + [None])[:2]
    first, _, remainder = rest.partition("/")
    if remainder and ("." in first or ":" in first or first == "localhost"):
        registry, path = first, remainder
    else:
        registry, path = "docker.io", rest
    tag = None
    if ":" in path.rsplit("/", 1)[-1]:
        path, tag = path.rsplit(":", 1)
    if registry == "docker.io" and "/" not in path:
        path = f"library/{path}"
    if not re.match(r"^[a-z0-9]+(?:[._/-][a-z0-9]+|__)*$", path):
        raise DeployError(f"invalid repository name in image reference {image!r}")
    return ImageRef(registry, path, digest or tag or "latest")


def check_ecr_location(image: str, region: str) -> ImageRef:
    """UsageError unless IMAGE is in Amazon ECR in REGION: SageMaker endpoints pull their image from
    ECR in the endpoint's own region. Reads only the reference (no network)."""
    try:
        ref = parse(image)
    except DeployError as exc:
        raise UsageError(str(exc)) from None
    m = ref.ecr
    repo = ref.repository.removeprefix("library/")
    tag = ref.reference if not ref.is_digest else "TAG"
    target = f"ACCOUNT.dkr.ecr.{region}.amazonaws.com/{repo}:{tag}"
    push = (f"push it there first, e.g. `./build.sh --platform linux/arm64,linux/amd64 --tag {repo}:{tag} "
            f"--push --ecr ACCOUNT.dkr.ecr.{region}.amazonaws.com` (creates the repository and logs in), "
            f"then pass --image {target}")
    if m is None:
        if ref.registry == "docker.io":
            where = ("a local or Docker Hub name" if "/" not in image.split("@")[0].rsplit(":", 1)[0]
                     else "a Docker Hub name")
        else:
            where = f"in registry {ref.registry}, not in Amazon ECR"
        raise UsageError(f"image {image} is {where}: a SageMaker endpoint pulls its image only from Amazon "
                         f"ECR in the endpoint's region ({region}); {push}")
    if m.group("region") != region:
        mirror = f"{m.group('account')}.dkr.ecr.{region}.amazonaws.com/{ref.repository}:{tag}"
        raise UsageError(f"image {image} is in ECR in {m.group('region')} but the endpoint is in {region}: "
                         f"SageMaker pulls only from ECR in the endpoint's region; copy it to {mirror} "
                         f"(ECR replication, or build.sh --push --ecr {m.group('account')}.dkr.ecr.{region}"
                         f".amazonaws.com) or pass --region {m.group('region')}")
    return ref


def normalize_arch(arch: str, variant: str | None = None) -> str:
    arch = (arch or "").lower()
    return _ARCH_ALIASES.get(arch, arch)


def archs_of_index(doc: dict) -> set[str]:
    archs = set()
    for entry in doc.get("manifests", []):
        annotations = entry.get("annotations") or {}
        if annotations.get("vnd.docker.reference.type") == "attestation-manifest":
            continue
        platform = entry.get("platform") or {}
        if platform.get("os", "linux") != "linux" or platform.get("architecture") in (None, "unknown"):
            continue
        archs.add(normalize_arch(platform["architecture"], platform.get("variant")))
    return archs


def _is_index(doc: dict, media_type: str | None) -> bool:
    return "manifests" in doc or (media_type or doc.get("mediaType")) in (MANIFEST_LIST, OCI_INDEX)


def image_architectures(image: str, aws=None) -> set[str]:
    """The set of architectures ('arm64', 'amd64', ...) the image offers for linux."""
    ref = parse(image)
    if ref.ecr:
        if aws is None:
            raise DeployError(f"{image} is an ECR image: AWS access is needed to read its manifest")
        return _ecr_architectures(ref, aws)
    return _registry_architectures(ref)


# --- ECR ---------------------------------------------------------------------------------------

def _ecr_architectures(ref: ImageRef, aws) -> set[str]:
    import botocore.exceptions

    m = ref.ecr
    account, region = m.group("account"), m.group("region")
    ecr = aws.ecr(region)
    image_id = {"imageDigest": ref.reference} if ref.is_digest else {"imageTag": ref.reference}
    try:
        out = ecr.batch_get_image(registryId=account, repositoryName=ref.repository,
                                  imageIds=[image_id], acceptedMediaTypes=ACCEPT)
    except botocore.exceptions.ClientError as exc:
        raise DeployError(f"cannot read {ref} from ECR: {error_message(exc)}") from exc
    if not out.get("images"):
        failures = out.get("failures") or [{}]
        f = failures[0]
        raise DeployError(f"image {ref} not found in ECR: {f.get('failureCode', 'ImageNotFound')} "
                          f"{f.get('failureReason', '')}".rstrip())
    image = out["images"][0]
    doc = json.loads(image["imageManifest"])
    media_type = image.get("imageManifestMediaType")
    if _is_index(doc, media_type):
        return archs_of_index(doc)
    if doc.get("schemaVersion") == 1:
        return {normalize_arch(doc.get("architecture", ""))}
    digest = doc["config"]["digest"]
    try:
        url = ecr.get_download_url_for_layer(registryId=account, repositoryName=ref.repository,
                                             layerDigest=digest)["downloadUrl"]
    except botocore.exceptions.ClientError as exc:
        raise DeployError(f"cannot read the config of {ref} from ECR: {error_message(exc)}") from exc
    resp = requests.get(url, timeout=TIMEOUT)
    if resp.status_code != 200:
        raise DeployError(f"cannot read the config of {ref}: HTTP {resp.status_code}")
    config = resp.json()
    return {normalize_arch(config.get("architecture", ""), config.get("variant"))}


# --- Docker Registry HTTP API v2 ---------------------------------------------------------------

def _base_url(registry: str) -> str:
    if registry == "docker.io":
        return "https://registry-1.docker.io"
    host = registry.rsplit(":", 1)[0] if not registry.startswith("[") else registry.split("]")[0] + "]"
    if host in ("localhost", "[::1]") or host.startswith("127."):
        return f"http://{registry}"
    return f"https://{registry}"


class _Client:
    def __init__(self, ref: ImageRef):
        self.ref = ref
        self.base = _base_url(ref.registry)
        self.http = requests.Session()
        self.token: str | None = None

    def get(self, path: str, accept: list[str] | None = None) -> requests.Response:
        url = f"{self.base}/v2/{self.ref.repository}/{path}"
        headers = {"Accept": ", ".join(accept)} if accept else {}
        for attempt in range(2):
            if self.token:
                headers["Authorization"] = f"Bearer {self.token}"
            try:
                resp = self.http.get(url, headers=headers, timeout=TIMEOUT)
            except requests.RequestException as exc:
                raise DeployError(f"cannot reach registry {self.ref.registry}: {type(exc).__name__}") from exc
            if resp.status_code == 401 and attempt == 0 and self._authenticate(resp):
                continue
            return resp
        return resp

    def _authenticate(self, resp: requests.Response) -> bool:
        """Anonymous bearer token for public images (the Docker Hub / distribution token flow)."""
        challenge = resp.headers.get("WWW-Authenticate", "")
        if not challenge.lower().startswith("bearer "):
            return False
        params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
        realm = params.pop("realm", None)
        if not realm:
            return False
        params.setdefault("scope", f"repository:{self.ref.repository}:pull")
        try:
            tok = self.http.get(realm, params=params, timeout=TIMEOUT)
        except requests.RequestException:
            return False
        if tok.status_code != 200:
            return False
        body = tok.json()
        self.token = body.get("token") or body.get("access_token")
        return bool(self.token)


def _registry_architectures(ref: ImageRef) -> set[str]:
    client = _Client(ref)
    resp = client.get(f"manifests/{ref.reference}", ACCEPT)
    if resp.status_code == 404:
        raise DeployError(f"image {ref} not found in registry {ref.registry}")
    if resp.status_code == 401:
        raise DeployError(f"registry {ref.registry} refused anonymous access to {ref.repository} "
                          "(private registries other than ECR are not supported by the architecture "
                          "check; pass --skip-arch-check)")
    if resp.status_code != 200:
        raise DeployError(f"registry {ref.registry} answered HTTP {resp.status_code} for {ref}")
    doc = resp.json()
    media_type = resp.headers.get("Content-Type", "").split(";")[0].strip()
    if _is_index(doc, media_type):
        return archs_of_index(doc)
    if doc.get("schemaVersion") == 1:
        return {normalize_arch(doc.get("architecture", ""))}
    digest = doc["config"]["digest"]
    blob = client.get(f"blobs/{digest}")
    if blob.status_code != 200:
        raise DeployError(f"cannot read config blob {digest} of {ref}: HTTP {blob.status_code}")
    config = blob.json()
    return {normalize_arch(config.get("architecture", ""), config.get("variant"))}
