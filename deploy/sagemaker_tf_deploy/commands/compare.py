"""`deploy compare` and `deploy local --fpmath-check`: the arguments, and the result shown with
its exit code (1 when a --max-abs-diff / --min-top1-agreement check fails).
"""

from __future__ import annotations

import argparse

from ..core import checks, comparison, output
from ..core.errors import UsageError
from ..local import container as local, fpmath
from ..operations import compare
from . import common


def _finish(result: dict, args, console) -> int:
    output.emit(result, args.output, table=comparison.table)
    if not result["ok"]:
        failed = [c for c in result["checks"] if not c["ok"]]
        console.error(f"deploy: compare: {len(failed)} check{'s' if len(failed) != 1 else ''} failed")
        return 1
    return 0


def cmd_compare(args, console) -> int:
    reqs = comparison.load_requests(args.requests)
    if bool(args.endpoint) == bool(args.url):
        raise UsageError("give --endpoint NAME [--variants A,B] or --url URL --url URL")
    if args.variants and not args.endpoint:
        raise UsageError("--variants goes with --endpoint")
    if args.url:
        if len(args.url) < 2:
            raise UsageError("give two servers: --url URL --url URL")
        targets = [comparison.url_target(u) for u in args.url]
        note = None
    else:
        aws = common.aws_from_args(args)
        wanted = [v.strip() for v in args.variants.split(",") if v.strip()] if args.variants else None
        if wanted is not None and len(wanted) < 2:
            raise UsageError("--variants needs two or more names: --variants A,B")
        variants = compare.endpoint_variants(aws, args.endpoint, wanted)
        targets = [compare.variant_target(aws, args.endpoint, v) for v in variants]
        note = ("latency measured from this machine through SageMaker's runtime API (network included); "
                "the endpoint's own ModelLatency is in CloudWatch")
    console.info(f"sending {len(reqs)} requests to {', '.join(t.label for t in targets)}")
    comparison.run(targets, reqs, warmup=args.warmup, progress=console.progress)
    console.progress_done()
    result = comparison.report(targets, reqs, source=str(args.requests), warmup=args.warmup,
                               max_abs_diff=args.max_abs_diff, min_top1=args.min_top1_agreement, note=note)
    return _finish(result, args, console)


def cmd_fpmath_check(args, console, region: str | None, download) -> int:
    if not args.requests:
        raise UsageError("--fpmath-check needs --requests FILE (JSON Lines, a folder of files, or one file)")
    if args.invoke:
        raise UsageError("--fpmath-check and --invoke do not go together")
    spec = local.LocalSpec(image=args.image, model_data=args.model_data, env=checks.parse_env(args.env),
                           region=region, platform=args.platform, ping_timeout=args.ping_timeout)
    result = fpmath.fpmath_check(spec, args.requests, console, download, warmup=args.warmup,
                                 max_abs_diff=args.max_abs_diff, min_top1=args.min_top1_agreement)
    return _finish(result, args, console)


def add_threshold_arguments(p) -> None:
    p.add_argument("--max-abs-diff", type=float, metavar="X",
                   help="exit 1 unless every output's max absolute difference is at most X")
    p.add_argument("--min-top1-agreement", type=common.share, metavar="Y",
                   help="exit 1 unless the top-1 label agrees on at least this share of rows (0.99 or 99%%)")
    p.add_argument("--warmup", type=int, default=1, metavar="N",
                   help="requests per target sent first and not counted (default 1)")


def add_parser(sub, common) -> None:
    p = sub.add_parser("compare", parents=[common],
                       help="same requests to two endpoint variants or two servers: latency and agreement",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="examples:\n  deploy compare --requests examples/digits/requests.jsonl --endpoint digits "
                              "--variants AllTraffic,Graviton --max-abs-diff 1e-3\n"
                              "  deploy compare --requests examples/digits/requests.jsonl "
                              "--url http://127.0.0.1:18080 --url http://127.0.0.1:18081")
    p.add_argument("--requests", required=True, metavar="FILE",
                   help="JSON Lines (one JSON body per line), a folder of files (content type from each "
                        "extension), or one file")
    p.add_argument("--endpoint", metavar="NAME", help="compare this endpoint's variants (TargetVariant)")
    p.add_argument("--variants", metavar="A,B", help="which variants (default: the x86 and Graviton variants "
                                                     "of a migration, else all production variants)")
    p.add_argument("--url", action="append", metavar="URL", help="a server (repeat: --url A --url B); "
                                                                 "requests go to URL/invocations")
    add_threshold_arguments(p)
    p.set_defaults(func=cmd_compare)
