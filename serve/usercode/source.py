"""Where the user's inference.py lives, its requirements, and importing it.

Sources, as SageMaker's framework containers read them: ``SAGEMAKER_PROGRAM`` inside
``SAGEMAKER_SUBMIT_DIRECTORY`` (a folder, a .tar.gz, or an s3:// URI of one), else
``code/inference.py`` inside the model dir. ``code/lib`` goes on the import path and
``code/requirements.txt`` is installed before any worker starts, unless ``code/lib`` exists:
then, as in AWS's TensorFlow container, the packages are taken to be in lib/ already (that is
how network-isolated endpoints, where pip reaches no index, ship them) and requirements.txt is
not installed.

A model's requirements can never change the server: they install into a folder of their own
(``pip --target``, a new ``mkdtemp`` folder per install), which goes at the END of the import
path of the process that imports the script, so the server's own packages are always found
first, and the install is constrained (``pip --constraint``) to the versions of every package the
server runs with: a requirement that asks for another version of one of them is refused, naming
it. The install has a deadline: ``pip --timeout``/``--retries`` for each connection and
SAGEMAKER_PIP_INSTALL_TIMEOUT seconds in all, after which pip is stopped and the start (or the
multi-model load) fails saying so.
"""
from __future__ import annotations

import ast
import contextlib
import importlib.metadata
import importlib.util
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from types import ModuleType

from model_archive.archives import ArchiveError, ArchiveTooLarge, safe_extract
from serve.contract.settings import Settings
from serve.usercode import main_thread

log = logging.getLogger(__name__)

DEFAULT_PROGRAM = "inference.py"


class UserCodeSetupError(Exception):
    """The user's code cannot be found, fetched, installed or imported."""


@dataclass(frozen=True)
class CodeLocation:
    directory: Path
    program: str
    packages: Path | None = None    # where its requirements.txt installed (never site-packages)

    @property
    def script(self) -> Path:
        return self.directory / self.program


# SAGEMAKER_SUBMIT_DIRECTORY archives hold code, not models: this bounds what one may unpack to.
MAX_CODE_ARCHIVE_BYTES = 512 << 20


def _extract(archive: Path) -> Path:
    """Unpack into a new folder (mkdtemp: unpredictable, made atomically), never into one found lying
    around: a folder planted at a guessable path would be imported and run."""
    target = Path(tempfile.mkdtemp(prefix="sagemaker-code-"))
    try:
        safe_extract(archive, target, MAX_CODE_ARCHIVE_BYTES)  # refuses absolute paths, '..', links out, devices
    except ArchiveTooLarge as exc:
        shutil.rmtree(target, ignore_errors=True)
        raise UserCodeSetupError(f"cannot unpack SAGEMAKER_SUBMIT_DIRECTORY {archive}: {exc}, the limit on what "
                                 f"a code archive may unpack to; ship weights in the model archive") from None
    except (ArchiveError, OSError) as exc:
        shutil.rmtree(target, ignore_errors=True)
        raise UserCodeSetupError(f"cannot unpack SAGEMAKER_SUBMIT_DIRECTORY {archive}: {exc}") from None
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


def universal_code(settings: Settings) -> CodeLocation | None:
    """Multi-model mode: code/ at the root of the models folder, for every model without its own."""
    code_dir = settings.models_dir / "code"
    program = settings.program or DEFAULT_PROGRAM
    return CodeLocation(code_dir, program) if (code_dir / program).is_file() else None


def locate_in(model_dir: Path, universal: CodeLocation | None, settings: Settings | None = None,
              program: str = DEFAULT_PROGRAM) -> CodeLocation | None:
    """A multi-model model's own code/ (its requirements installed now), else the universal one."""
    own = CodeLocation(Path(model_dir) / "code", program)
    if own.script.is_file():
        return install_requirements(own, settings)
    return universal


# pip's own: without it a --target install can be left half-written
_NOT_CONSTRAINED = {"pip", "setuptools", "wheel"}
PIP_RETRIES = 2
PIP_CONNECT_TIMEOUT = 15   # seconds, per connection attempt (pip --timeout)


def server_pins() -> dict[str, str]:
    """Every package the server runs with, name -> installed version: what requirements may not change."""
    pins = {}
    for dist in importlib.metadata.distributions():
        name = (dist.metadata["Name"] or "").strip()
        key = re.sub(r"[-_.]+", "-", name).lower()
        if name and key not in _NOT_CONSTRAINED and dist.version:
            pins[key] = dist.version
    return pins


def _conflict(stderr: str, pins: dict[str, str]) -> str | None:
    """The server package a refused requirement asked to change, said plainly, from pip's resolver output."""
    for match in re.finditer(r"The user requested \(constraint\) ([A-Za-z0-9_.-]+)==", stderr):
        key = re.sub(r"[-_.]+", "-", match.group(1)).lower()
        asked = re.search(rf"The user requested {re.escape(match.group(1))}([^\n]*)", stderr, re.I)
        wanted = asked.group(1).strip() if asked else "another version"
        return (f"it asks for {match.group(1)}{wanted if wanted.startswith(('=', '<', '>', '!', '~')) else ' ' + wanted}"
                f", but the server runs {match.group(1)} {pins.get(key, '?')}; a model's requirements may add "
                f"packages, never change the server's")
    return None


def _run_pip(args: list[str], deadline: float) -> subprocess.CompletedProcess | None:
    """pip in its own process group, stopped whole (with what it started) at DEADLINE seconds: None then."""
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=deadline)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return None
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


def install_requirements(code: CodeLocation, settings: Settings | None = None) -> CodeLocation:
    """CODE's requirements.txt installed where only it looks: CODE with ``packages`` set (unchanged
    when there is nothing to install)."""
    requirements = code.directory / "requirements.txt"
    if not requirements.is_file():
        return code
    if (code.directory / "lib").is_dir():
        log.warning("not installing %s: %s exists, so its modules are used instead (as AWS's TensorFlow "
                    "container does)", requirements, code.directory / "lib")
        return code
    limit = settings.pip_install_timeout if settings is not None else Settings.model_fields["pip_install_timeout"].default
    pins = server_pins()
    target = Path(tempfile.mkdtemp(prefix="sagemaker-packages-"))
    constraints = target.parent / f"{target.name}-constraints.txt"
    constraints.write_text("".join(f"{name}=={version}\n" for name, version in sorted(pins.items())))
    log.info("installing %s into %s (at most %d s, SAGEMAKER_PIP_INSTALL_TIMEOUT)", requirements, target, limit)
    try:
        proc = _run_pip([sys.executable, "-m", "pip", "install", "--no-input", "--disable-pip-version-check",
                         "--no-warn-script-location", "--target", str(target), "--constraint", str(constraints),
                         "--timeout", str(min(PIP_CONNECT_TIMEOUT, limit)), "--retries", str(PIP_RETRIES),
                         "-r", str(requirements)], limit)
    finally:
        constraints.unlink(missing_ok=True)
    if proc is None:
        shutil.rmtree(target, ignore_errors=True)
        raise UserCodeSetupError(f"pip install -r {requirements} did not finish within {limit} s "
                                 f"(SAGEMAKER_PIP_INSTALL_TIMEOUT); is the package index reachable? "
                                 f"(network-isolated endpoints ship packages in code/lib)")
    if proc.returncode != 0:
        shutil.rmtree(target, ignore_errors=True)
        for line in (proc.stdout + proc.stderr).splitlines():
            log.info("pip: %s", line)
        conflict = _conflict(proc.stdout + proc.stderr, pins)
        if conflict:
            raise UserCodeSetupError(f"pip install -r {requirements} refused: {conflict}")
        # pip's own verdict is its last "ERROR:" line; that is what the one-line failure quotes
        errors = [line for line in proc.stderr.splitlines() if line.startswith("ERROR:")]
        reason = errors[-1] if errors else (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise UserCodeSetupError(f"pip install -r {requirements} failed (exit {proc.returncode}): {reason}")
    log.info("installed %s into %s", requirements, target)
    return replace(code, packages=target)


def import_script(code: CodeLocation, module_name: str | None = None) -> ModuleType:
    """Import the script (as MODULE_NAME: each model's inference.py has its own in multi-model mode),
    on the main thread (``main_thread``)."""
    for path in (code.directory / "lib", code.directory):
        if path.is_dir() and str(path) not in sys.path:
            sys.path.insert(0, str(path))
    # last: the server's own packages (site-packages) are always found before a model's
    if code.packages is not None and code.packages.is_dir() and str(code.packages) not in sys.path:
        sys.path.append(str(code.packages))
    name = module_name or Path(code.program).stem
    spec = importlib.util.spec_from_file_location(name, code.script)
    if spec is None or spec.loader is None:
        raise UserCodeSetupError(f"cannot import {code.script}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module

    def run() -> None:
        # the code folder sits in the model folder, which is only ever read: no __pycache__ written there
        previous, sys.dont_write_bytecode = sys.dont_write_bytecode, True
        try:
            spec.loader.exec_module(module)
        finally:
            sys.dont_write_bytecode = previous

    try:
        main_thread.call(run)   # where signal.signal works, as in AWS's container
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


TFS_FUNCTIONS = ("handler", "input_handler", "output_handler")
TOOLKIT_FUNCTIONS = ("model_fn", "input_fn", "predict_fn", "output_fn", "transform_fn")


def _top_level_names(tree: ast.Module) -> set[str]:
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            for target in (node.targets if isinstance(node, ast.Assign) else [node.target]):
                names.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    return names


def style_of_script(script: Path) -> str | None:
    """'tfs' (AWS TensorFlow container: handler, input_handler/output_handler) or 'toolkit'
    (model_fn, input_fn, predict_fn, output_fn, transform_fn), read from the script's source without
    running it: the style decides which process imports it (HTTP workers or the model process).
    None when the source does not say (the model process then imports it and asks the module)."""
    try:
        tree = ast.parse(script.read_bytes(), filename=str(script))
    except SyntaxError:
        return None  # importing it gives Python's own error, with its line
    return style_of_names(_top_level_names(tree))


def style_of_names(names) -> str | None:
    names = set(names)
    if names & set(TFS_FUNCTIONS):
        return "tfs"
    if names & set(TOOLKIT_FUNCTIONS):
        return "toolkit"
    return None


def no_known_functions(script: Path) -> UserCodeSetupError:
    return UserCodeSetupError(f"{script.name} defines none of {', '.join(TFS_FUNCTIONS + TOOLKIT_FUNCTIONS)}; "
                              f"see README 'User code'")
