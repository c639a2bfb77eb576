"""Resolve the project's runtime dependencies for this interpreter and platform into a fully pinned,
hash-checked requirements file (stdout). Runs inside container/lock.Dockerfile, i.e. in the image's
own base (Debian trixie, Python 3.13) on the target architecture, so environment markers are
evaluated exactly as they will be at install time. Regenerate with container/lock.sh.

    python lock.py PYPROJECT              resolve here (inside the target image; what lock.sh does)
    python lock.py derive LOCK ARCH       ARCH's lock with LOCK's pins (on any host; lock.sh --cross)
"""
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

# The TensorFlow distribution each architecture installs (pyproject.toml's markers say the same).
TF_DIST = {"amd64": "tensorflow-cpu", "arm64": "tensorflow"}
# Wheel platform tags an arm64 Debian trixie (glibc 2.41) accepts, for cross-resolution.
PLATFORMS = {"arm64": ["manylinux2014_aarch64"] + [f"manylinux_2_{m}_aarch64" for m in range(17, 42)],
             "amd64": ["manylinux2014_x86_64"] + [f"manylinux_2_{m}_x86_64" for m in range(5, 42)]}


def pip_report(args: list[str]) -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp, "report.json")
        subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed",
                        "--quiet", "--only-binary=:all:", "--report", str(report), *args], check=True)
        return json.loads(report.read_text())["install"]


def resolve(pyproject: Path) -> tuple[list[dict], str, str]:
    """Full resolution with this interpreter on this machine (run inside the target image)."""
    deps = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    with tempfile.TemporaryDirectory() as tmp:
        req_in = Path(tmp, "requirements.in")
        req_in.write_text("\n".join(deps) + "\n")
        items = pip_report(["-r", str(req_in)])
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    return items, arch, platform.python_version()


def derive(source_lock: Path, arch: str) -> tuple[list[dict], str, str]:
    """The same pins as SOURCE_LOCK (another architecture's lock), with ARCH's wheels and hashes,
    fetched by pip's cross-platform download (--platform/--python-version); the TensorFlow
    distribution swapped for ARCH's. Assumes the dependency set is the same on both architectures
    (true of this stack; the image build's `pip check` proves it)."""
    src = source_lock.read_text()
    src_arch = re.search(r"for linux/(\w+)", src).group(1)
    pins = [ln.split()[0] for ln in src.splitlines() if "==" in ln and not ln.startswith("#")]
    pins = [p.replace(TF_DIST[src_arch] + "==", TF_DIST[arch] + "==") if p.startswith(TF_DIST[src_arch] + "==")
            else p for p in pins]
    args = ["--isolated", "--no-deps", "--index-url", "https://pypi.org/simple",
            "--python-version", "3.13", "--implementation", "cp", "--abi", "cp313",
            "--target", tempfile.mkdtemp()]
    for plat in PLATFORMS[arch]:
        args += ["--platform", plat]
    ca = next((os.environ[v] for v in ("PIP_CERT", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE")
               if os.environ.get(v) and os.path.isfile(os.environ[v])), None)
    if ca:
        args += ["--cert", ca]
    py_version = re.search(r"Python ([0-9.]+)", src).group(1)
    return pip_report(args + pins), arch, py_version


if sys.argv[1] == "derive":
    items, arch, py_version = derive(Path(sys.argv[2]), sys.argv[3])
    how = f"derived from {Path(sys.argv[2]).name}'s pins by cross-platform download (container/lock.sh --cross)"
else:
    items, arch, py_version = resolve(Path(sys.argv[1]))
    how = "resolved in the image's base on that platform (container/lock.sh)"

lines = []
for item in sorted(items, key=lambda i: i["metadata"]["name"].lower()):
    meta = item["metadata"]
    info = item["download_info"]
    hashes = info.get("archive_info", {}).get("hashes") or {}
    if "sha256" not in hashes:
        sys.exit(f"lock.py: no sha256 for {meta['name']} ({info.get('url')})")
    name = re.sub(r"[-_.]+", "-", meta["name"]).lower()  # PEP 503 normal form
    lines.append(f"{name}=={meta['version']} \\\n    --hash=sha256:{hashes['sha256']}")

print(f"# Runtime requirements of the serve package for linux/{arch}, Python {py_version} "
      "(Debian trixie), fully pinned with hashes.")
print(f"# From pyproject.toml's [project].dependencies, {how}; do not edit.")
print("\n".join(lines))
