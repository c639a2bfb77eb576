"""`deploy`: the parser every subcommand registers on, and main(), which maps every outcome to
the exit-code table (core/errors.py).

Results go to stdout; progress and step-by-step messages to stderr, so `deploy invoke ... | jq`
and `deploy list` stay clean to pipe.
"""

from __future__ import annotations

import argparse
import sys

import botocore.exceptions

from ..core import interrupts, output
from ..core.aws import error_message
from ..core.errors import DeployError
from ..core.output import Console
from . import common, compare, endpoint, local, migrate, multimodel, transform


def build_parser() -> argparse.ArgumentParser:
    aws_args = argparse.ArgumentParser(add_help=False)
    g = aws_args.add_argument_group("AWS")
    common.add_aws_arguments(g)
    g.add_argument("-q", "--quiet", action="store_true", help="no progress messages")
    output.add_output_argument(g)

    wait_args = argparse.ArgumentParser(add_help=False)
    wait_args.add_argument("--timeout", type=common.positive_float, default=1800.0,
                           help="seconds to wait for the endpoint (default 1800)")
    wait_args.add_argument("--poll", type=common.positive_float, default=15.0,
                           help="seconds between status checks (default 15)")

    parser = argparse.ArgumentParser(
        prog="deploy",
        description="Package a TensorFlow model, deploy it to a SageMaker endpoint (Graviton or x86), "
                    "or run the serving image locally the way SageMaker would.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    endpoint.add_parsers(sub, aws_args, wait_args)
    local.add_parser(sub, aws_args)
    migrate.add_parsers(sub, aws_args, wait_args)   # issue 14: migrate / promote / rollback
    compare.add_parser(sub, aws_args)               # issue 14
    transform.add_parser(sub)                       # issue 15
    multimodel.add_parsers(sub, aws_args)           # issue 12: `deploy models`, create/local --multi-model,
                                                    # invoke --target-model/--local
    return parser


EXAMPLES = {
    "package": "deploy package examples/digits/model -o model.tar.gz",
    "create": "deploy create --image 123456789012.dkr.ecr.eu-west-1.amazonaws.com/sagemaker-tf-graviton:1.0 "
              "--model-data model.tar.gz --role arn:aws:iam::123456789012:role/SageMakerExecutionRole --name digits",
    "invoke": "deploy invoke digits --file examples/digits/request.json",
    "update": "deploy update digits --instance-type ml.c7g.2xlarge",
    "autoscale": "deploy autoscale digits --min 1 --max 4 --target-invocations 1000",
    "delete": "deploy delete digits --purge-s3",
    "list": "deploy list --output json",
    "status": "deploy status digits --output json",
    "wait": "deploy wait digits --timeout 1800",
    "models": "deploy models list digits-mme",
    "local": "deploy local --image sagemaker-tf-graviton:dev-amd64 --model-data examples/digits/model.tar.gz "
             "--invoke examples/digits/request.json",
}

EPILOG = """exit codes: 0 done, 1 AWS refused or failed (or a wait timed out), 2 usage or a local check
failed (nothing was sent to AWS), 130 SIGINT, 143 SIGTERM, 129 SIGHUP, 141 stdout closed.
SIGINT, SIGTERM and SIGHUP are handled alike, also in background jobs; see --on-interrupt
of create/update and docs/deploy.md."""


def _version() -> str:
    try:
        from importlib.metadata import version
        return version("sagemaker-tf-deploy")
    except Exception:
        return "unknown"


def _finish_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """--version, the exit-code epilog and one example per subcommand (kept out of build_parser so
    subcommands registered there by anyone get the same treatment)."""
    parser.add_argument("--version", action="version", version=f"deploy {_version()}")
    parser.epilog = EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    for action in parser._subparsers._group_actions if parser._subparsers else []:
        for name, sp in getattr(action, "choices", {}).items():
            if sp.epilog is None and name in EXAMPLES:
                sp.epilog = f"example:\n  {EXAMPLES[name]}"
                sp.formatter_class = argparse.RawDescriptionHelpFormatter
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse, run, and map every outcome to the exit-code table in errors.py (no traceback)."""
    parser = _finish_parser(build_parser())
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:          # argparse: 2 for usage, 0 for --help/--version
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    except BrokenPipeError:
        return output.closed_pipe()
    console = Console(quiet=args.quiet)
    try:
        with interrupts.handle_signals():
            return args.func(args, console)
    except BrokenPipeError:
        return output.closed_pipe()
    except interrupts.Interrupted as exc:
        console.progress_done()
        console.error(f"deploy: {exc}")
        return exc.exit_code
    except KeyboardInterrupt:
        console.progress_done()
        console.error("deploy: interrupted by SIGINT")
        return 130
    except DeployError as exc:
        console.progress_done()
        console.error(f"deploy: error: {exc}")
        return exc.exit_code
    except botocore.exceptions.NoCredentialsError:
        console.error("deploy: error: no AWS credentials found (environment, profile or instance role)")
        return 1
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
        console.progress_done()
        console.error(f"deploy: error: {error_message(exc)}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
