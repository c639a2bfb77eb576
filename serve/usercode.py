"""Where the user's inference.py lives, its requirements, and importing it.

Sources, as SageMaker's framework containers read them: ``SAGEMAKER_PROGRAM`` inside
``SAGEMAKER_SUBMIT_DIRECTORY`` (a folder, a .tar.gz, or an s3:// URI of one), else
``code/inference.py`` inside the model dir. ``code/lib`` goes on the import path and
``code/requirements.txt`` is installed before any worker starts, unless ``code/lib`` exists:
then, as in AWS's TensorFlow container, the packages are taken to be in lib/ already (that is
how network-isolated endpoints, where pip reaches no index, ship them) and requirements.txt is
not installed.
"""
from __future__ import annotations

import hashlib
import importlib.util
import logging
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from .archives import ArchiveError, safe_extract
from .settings import Settings

log = logging.getLogger(__name__)

DEFAULT_PROGRAM = "inference.py"


class UserCodeSetupError(Exception):
    """The user's code cannot be found, fetched, installed or imported."""


@dataclass(frozen=True)
class CodeLocation:
    directory: Path
    program: str

    @property
    def script(self) -> Path:
        return self.directory / self.program


def _extract(archive: Path) -> Path:
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()[:16]
    target = Path(tempfile.gettempdir()) / f"sagemaker-code-{digest}"
    if not target.is_dir():
        staging = Path(tempfile.mkdtemp(prefix="sagemaker-code-"))
        try:
            safe_extract(archive, staging)  # refuses absolute paths, '..', links out, devices, naming the member
        except (ArchiveError, OSError) as exc:
            shutil.rmtree(staging, ignore_errors=True)
            raise UserCodeSetupError(f"cannot unpack SAGEMAKER_SUBMIT_DIRECTORY {archive}: {exc}") from None
        staging.rename(target)
    return target


def _download(uri: str, region: str | None) -> Path:
    import boto3  # only needed for s3:// sources

    bucket, _, key = uri.removeprefix("s3://").partition("/")
    local = Path(tempfile.mkdtemp(prefix="sagemaker-submit-")) / (Path(key).name or "sourcedir.tar.gz")
    try:
        boto3.client("s3", region_name=region).download_file(bucket, key, str(local))
    except Exception as exc:
        raise UserCodeSetupError(f"cannot download SAGEMAKER_SUBMIT_DIRECTORY {uri}: {exc}") from None
    return local


def locate(settings: Settings) -> CodeLocation | None:
    program = settings.program or DEFAULT_PROGRAM
    source = settings.submit_directory
    if source:
        if source.startswith("s3://"):
            path = _download(source, settings.region)
        else:
            path = Path(source.removeprefix("file://"))
        if path.is_file() and path.name.endswith((".tar.gz", ".tgz", ".tar")):
            path = _extract(path)
        if (path / program).is_file():
            return CodeLocation(path, program)
        if (settings.model_dir / "code" / program).is_file():
            # SageMaker's SDK points SUBMIT_DIRECTORY at an S3 copy that the model archive also holds.
            return CodeLocation(settings.model_dir / "code", program)
        raise UserCodeSetupError(f"SAGEMAKER_PROGRAM {program} not found in SAGEMAKER_SUBMIT_DIRECTORY {source}")
    code_dir = settings.model_dir / "code"
    if (code_dir / program).is_file():
        return CodeLocation(code_dir, program)
    if settings.program:
        raise UserCodeSetupError(f"SAGEMAKER_PROGRAM {program} not found in {code_dir}")
    return None


def install_requirements(code: CodeLocation) -> None:
    requirements = code.directory / "requirements.txt"
    if not requirements.is_file():
        return
    if (code.directory / "lib").is_dir():
        log.warning("not installing %s: %s exists, so its modules are used instead (as AWS's TensorFlow "
                    "container does)", requirements, code.directory / "lib")
        return
    log.info("installing %s", requirements)
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-input", "--disable-pip-version-check",
         "-r", str(requirements)],
        capture_output=True, text=True)
    if proc.returncode != 0:
        log.info("pip's output:\n%s%s", proc.stdout, proc.stderr)
        # pip's own verdict is its last "ERROR:" line; that is what the one-line failure quotes
        errors = [line for line in proc.stderr.splitlines() if line.startswith("ERROR:")]
        reason = errors[-1] if errors else (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise UserCodeSetupError(f"pip install -r {requirements} failed (exit {proc.returncode}): {reason}")
    log.info("installed %s", requirements)


def import_script(code: CodeLocation) -> ModuleType:
    for path in (code.directory / "lib", code.directory):
        if path.is_dir() and str(path) not in sys.path:
            sys.path.insert(0, str(path))
    name = Path(code.program).stem
    spec = importlib.util.spec_from_file_location(name, code.script)
    if spec is None or spec.loader is None:
        raise UserCodeSetupError(f"cannot import {code.script}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    # the code folder sits in the model folder, which is only ever read: no __pycache__ written there
    previous, sys.dont_write_bytecode = sys.dont_write_bytecode, True
    try:
        spec.loader.exec_module(module)
    finally:
        sys.dont_write_bytecode = previous
    return module
