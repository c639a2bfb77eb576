"""Multi-model endpoints on the command line (issue 12): `deploy models add|list`, and the
--multi-model / --target-model / --local flags added to create, invoke and local (their handlers
turn to operations/multimodel.py when the flag is given, to the plain command otherwise).
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

from ..core import bodies, checks, output
from ..core.errors import UsageError
from ..local import multimodel as local_multimodel
from ..operations import endpoint, multimodel
from ..operations.invoke import softmax_response
from . import common


def cmd_create(args, console) -> int:
    if args.bucket:
        raise UsageError("--bucket is where create uploads a local archive; a multi-model endpoint uploads "
                         "nothing (its archives are under --model-data s3://BUCKET/PREFIX/: `deploy models add`)")
    aws = common.aws_from_args(args)
    spec = endpoint.CreateSpec.from_args(args)
    out = multimodel.create(aws, spec, console)
    output.emit(out, args.output, table=lambda o: [
        f"endpoint {o['endpoint']} is {o['status']} (multi-model)",
        f"  model data   {o['model_data']} ({o['archives']} archive(s))",
        f"  add a model  deploy models add {o['endpoint']} model.tar.gz",
        f"  try it       deploy invoke {o['endpoint']} --target-model model.tar.gz --json '...'",
        f"  remove it    deploy delete {o['endpoint']}"])
    return 0


def cmd_models_add(args, console) -> int:
    aws = common.aws_from_args(args)
    out = multimodel.add(aws, args.endpoint, args.archive, args.name, args.overwrite, console)
    output.emit(out, args.output, table=lambda o: [
        f"{o['target_model']}  ({o['uri']}, {o['bytes'] / 1e6:.1f} MB)",
        f"  invoke it  deploy invoke {o['endpoint']} --target-model {o['target_model']} --json '...'"])
    return 0


def cmd_models_list(args, console) -> int:
    aws = common.aws_from_args(args)
    prefix, _ = multimodel.endpoint_prefix(aws, args.endpoint)
    rows = multimodel.list_archives(aws, prefix)
    output.emit(rows, args.output, table=lambda rows: _list_table(rows, prefix))
    return 0


def _list_table(rows: list[dict], prefix: str) -> list[str]:
    if not rows:
        return [f"no model archives under {prefix} (add one with `deploy models add`)"]
    width = max(len("NAME"), *(len(r["name"]) for r in rows))
    lines = [f"{'NAME'.ljust(width)}  {'SIZE':>10}  LAST MODIFIED"]
    for r in rows:
        when = r["last_modified"]
        when = when.astimezone(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC") if hasattr(when, "astimezone") \
            else str(when)
        lines.append(f"{r['name'].ljust(width)}  {_size(r['size']):>10}  {when}")
    lines.append(f"{len(rows)} archive(s) under {prefix}")
    return lines


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)  # pragma: no cover


def cmd_local(args, console) -> int:
    region = common.local_region(args)
    if args.model_data:
        raise UsageError("give --multi-model DIR or --model-data, not both")
    if args.invoke or args.fpmath_check:
        raise UsageError("--multi-model serves until Ctrl-C: invoke it with "
                         "`deploy invoke local --local URL --target-model NAME.tar.gz ...`")
    spec = local_multimodel.LocalMultiSpec(image=args.image, archives=Path(args.multi_model), port=args.port,
                                           host_ip=args.host_ip, env=checks.parse_env(args.env), region=region,
                                           platform=args.platform, ping_timeout=args.ping_timeout,
                                           stream_logs=not args.no_logs, memory=args.memory)
    return local_multimodel.run_local(spec, console.info)


def _dispatch(flag: str, ours, theirs):
    def func(args, console):
        return (ours if getattr(args, flag, None) else theirs)(args, console)
    return func


def add_parsers(sub, aws_args) -> None:
    """Register `deploy models add|list` and the multi-model flags of create, invoke and local
    (their handlers dispatch here when the flag is given, to the plain command's otherwise)."""
    create_p, invoke_p, local_p = (sub.choices[n] for n in ("create", "invoke", "local"))
    create_p.add_argument("--multi-model", action="store_true",
                          help="a multi-model endpoint: --model-data is the S3 prefix holding NAME.tar.gz archives "
                               "(Mode MultiModel; see docs/multi-model.md)")
    create_p.set_defaults(func=_dispatch("multi_model", cmd_create, create_p.get_default("func")))

    invoke_p.add_argument("--target-model", metavar="NAME.tar.gz",
                          help="multi-model endpoint: the archive to use, relative to its S3 prefix (TargetModel)")
    invoke_p.add_argument("--local", nargs="?", const=multimodel.LOCAL_URL, metavar="URL",
                          help=f"invoke `deploy local --multi-model` at URL (default {multimodel.LOCAL_URL}) "
                               "instead of AWS")
    # both go through multimodel.invoke: the plain invoke has no TargetModel
    theirs = invoke_p.get_default("func")

    def invoke_func(args, console):
        if not (args.target_model or args.local):
            return theirs(args, console)
        aws = None if args.local else common.aws_from_args(args)
        body = common.read_body(args)
        out, content_type = multimodel.invoke(aws, args, body, common.content_type(args))
        if args.output in ("json", "text"):
            answer = softmax_response(out) if args.softmax else bodies.decoded(out, content_type)
            output.emit({"endpoint": args.endpoint, "target_model": args.target_model,
                         "content_type": content_type, "body": answer}, args.output)
            return 0
        common.print_response(out, content_type, args.softmax)
        return 0
    invoke_p.set_defaults(func=invoke_func)

    for action in local_p._actions:
        if action.dest == "model_data":     # --multi-model DIR replaces it
            action.required = False
            action.help = (action.help or "") + " (required unless --multi-model DIR)"
    local_p.add_argument("--multi-model", metavar="DIR",
                         help="serve as a multi-model endpoint: DIR holds NAME.tar.gz archives (as the S3 prefix "
                              "would); models load on first invoke (see docs/multi-model.md)")
    local_p.add_argument("--memory", metavar="SIZE",
                         help="with --multi-model: docker run --memory SIZE (an instance's memory, e.g. 4g)")
    theirs_local = local_p.get_default("func")

    def local_func(args, console):
        if args.multi_model:
            return cmd_local(args, console)
        if args.memory:
            raise UsageError("--memory goes with --multi-model DIR")
        if not args.model_data:
            raise UsageError("give --model-data DIR|TAR_GZ|S3_URI (or --multi-model DIR)")
        return theirs_local(args, console)
    local_p.set_defaults(func=local_func)

    p = sub.add_parser("models", help="multi-model endpoints: add an archive under the endpoint's S3 prefix, "
                       "list them")
    msub = p.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    a = common.add_endpoint_command(
        msub, "add", parents=[aws_args], help="upload an archive (or a model folder, packaged) under the endpoint's "
        "model prefix; prints the TargetModel name",
        example="deploy models add digits-mme examples/digits/model.tar.gz --name digits-v1.tar.gz")
    a.add_argument("archive", metavar="ARCHIVE", help="a model.tar.gz, or a model folder (packaged as `deploy package` "
                   "does)")
    a.add_argument("--name", metavar="NAME.tar.gz", help="the TargetModel name (default: the archive's file name, "
                   "or FOLDER.tar.gz)")
    a.add_argument("--overwrite", action="store_true", help="replace an archive of that name (an instance that has "
                   "it loaded keeps serving the old one)")
    a.set_defaults(func=cmd_models_add)
    lst = common.add_endpoint_command(
        msub, "list", parents=[aws_args], help="archives under the endpoint's model prefix (name, size, last modified)",
        example="deploy models list digits-mme --output json")
    lst.set_defaults(func=cmd_models_list)
