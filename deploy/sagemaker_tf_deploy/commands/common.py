"""What every subcommand does with its arguments and its answer: the AWS session from --region /
--profile / --endpoint-url, a request body from --file / --json and its content type, an answer
printed, and the argument types (positive numbers, shares).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from ..core import bodies
from ..core.aws import Aws
from ..core.errors import UsageError
from ..operations import invoke


def out(text: str = "") -> None:
    print(text, flush=True)


def add_aws_arguments(group) -> None:
    """--region, --profile, --endpoint-url: what aws_from_args reads."""
    group.add_argument("--region", help="AWS region (default: AWS_REGION / AWS_DEFAULT_REGION / profile)")
    group.add_argument("--profile", help="named profile from ~/.aws/config")
    group.add_argument("--endpoint-url", help="send every AWS call here (also AWS_ENDPOINT_URL)")


def add_endpoint_command(sub, name: str, *, parents: list, help: str, example: str) -> argparse.ArgumentParser:
    """A subcommand on one ENDPOINT (its first argument), with EXAMPLE under its help as
    commands/main.py's EXAMPLES give the top-level ones."""
    p = sub.add_parser(name, parents=parents, help=help, epilog=f"example:\n  {example}",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("endpoint", metavar="ENDPOINT")
    return p


def add_image_run_arguments(group) -> None:
    """--platform and --ping-timeout: how the image is run on this machine (`deploy local`,
    `deploy transform --local`)."""
    group.add_argument("--platform", help="override the platform (default: the image's own)")
    group.add_argument("--ping-timeout", type=positive_float, default=600.0,
                       help="seconds to wait for /ping (default 600; emulated arm64 is slow)")


def aws_from_args(args) -> Aws:
    return Aws(region=args.region, profile=args.profile, endpoint_url=args.endpoint_url)


def local_region(args) -> str | None:
    """The region a local run tells the container (SAGEMAKER_REGION): --region, else the
    environment's; None when neither says (no AWS session is made for it)."""
    return args.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")


def read_body(args) -> bytes:
    if args.file and args.json is not None:
        raise UsageError("give --file or --json, not both")
    if args.file:
        return (sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes())
    if args.json is not None:
        try:
            json.loads(args.json)
        except ValueError as exc:
            raise UsageError(f"--json is not valid JSON: {exc}") from exc
        return args.json.encode()
    raise UsageError("give the request body with --file F or --json '...'")


def content_type(args) -> str:
    if args.content_type:
        return args.content_type
    if getattr(args, "file", None) and args.file != "-":
        return bodies.CONTENT_TYPES.get(Path(args.file).suffix.lower(), "application/json")
    return "application/json"


def print_response(body: bytes, content_type: str, softmax: bool) -> None:
    if softmax:
        out(json.dumps(invoke.softmax_response(body)))
        return
    if content_type.startswith("application/x-npy") or content_type.startswith("application/x-npz"):
        sys.stdout.buffer.write(body)
        sys.stdout.flush()
        return
    out(body.decode("utf-8", errors="replace").rstrip("\n"))


def positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be positive")
    return value


def share(text: str) -> float:
    try:
        value = float(text.rstrip("%")) / (100.0 if text.endswith("%") else 1.0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError("must be between 0 and 1 (or 0% and 100%)")
    return value
