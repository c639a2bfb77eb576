"""`deploy local`: run the image here as SageMaker would, optionally invoke it once or check
BF16 fast math's drift (--fpmath-check, commands/compare.py).
"""

from __future__ import annotations

from pathlib import Path

from ..core import bodies, checks, output
from ..core.output import Console
from ..local import container as local
from ..operations import invoke, staging
from . import common, compare


def cmd_local(args, console: Console) -> int:
    region = common.local_region(args)
    download = None
    if args.model_data.startswith("s3://"):
        aws = common.aws_from_args(args)
        region = aws.region

        def download(uri: str, dest: Path) -> None:
            bucket, key = staging.split_s3(uri)
            console.info(f"downloading {uri}")
            aws.s3.download_file(bucket, key, str(dest))

    if args.fpmath_check:   # issue 14
        return compare.cmd_fpmath_check(args, console, region, download)
    spec = local.LocalSpec(
        image=args.image, model_data=args.model_data, port=args.port, host_ip=args.host_ip,
        env=checks.parse_env(args.env), region=region, platform=args.platform,
        ping_timeout=args.ping_timeout, invoke_file=Path(args.invoke) if args.invoke else None,
        content_type=args.content_type or bodies.CONTENT_TYPES.get(Path(args.invoke or "").suffix.lower(),
                                                                   "application/json"),
        accept=args.accept, stream_logs=not args.no_logs)
    result = local.run(spec, console.info, download)
    if spec.invoke_file is None:
        return 0
    ok = result.status_code is not None and 200 <= result.status_code < 300
    if args.output in ("json", "text"):
        body = invoke.softmax_response(result.body) if ok and args.softmax else bodies.decoded(result.body, "")
        output.emit({"image": args.image, "status_code": result.status_code, "content_type": result.content_type,
                     "startup_seconds": result.startup_seconds, "body": body}, args.output)
    elif ok:
        common.print_response(result.body, result.content_type, args.softmax)
    else:
        console.info(f"invoke answered HTTP {result.status_code}: "
                     f"{result.body.decode('utf-8', errors='replace')[:2000]}")
    return 0 if ok else 1


def add_parser(sub, aws_args) -> None:
    p = sub.add_parser("local", help="run the image here as SageMaker would, optionally invoke once",
                       parents=[aws_args])
    p.add_argument("--image", required=True)
    p.add_argument("--model-data", required=True, metavar="DIR|TAR_GZ|S3_URI")
    p.add_argument("--port", type=int, default=8080, help="host port (default 8080)")
    p.add_argument("--host-ip", default="127.0.0.1", help="host address to publish on (default 127.0.0.1)")
    p.add_argument("--env", action="append", metavar="K=V")
    common.add_image_run_arguments(p)
    p.add_argument("--invoke", metavar="FILE", help="send FILE once, print the answer, stop")
    p.add_argument("--content-type", help="for --invoke (default: from the extension, else application/json)")
    p.add_argument("--accept")
    p.add_argument("--softmax", action="store_true")
    p.add_argument("--no-logs", action="store_true", help="do not stream the container's log")
    p.add_argument("--fpmath-check", action="store_true", help="serve the image twice, DNNL_DEFAULT_FPMATH_MODE="
                   "BF16 and STRICT, send --requests to both, report the drift (see deploy compare)")
    p.add_argument("--requests", metavar="FILE", help="requests for --fpmath-check (as deploy compare)")
    compare.add_threshold_arguments(p)
    p.set_defaults(func=cmd_local)
