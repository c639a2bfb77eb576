"""What `deploy` prints: `--output json|table|text` results on stdout, progress on stderr.

The AWS CLI's conventions, for every command:
  * `--output table` (the default): the human layout each command defines (columns, key/value lines);
  * `--output json`: one JSON document; datetimes as ISO 8601 (`2026-11-26T21:53:00.123000+00:00`),
    no `ResponseMetadata` anywhere, keys as the command defines them;
  * `--output text`: tab-separated for awk/cut: a list of records gives one line per record (values
    in key order), a record gives one `dotted.key<TAB>value` line per leaf.
Progress and step messages go to stderr through `Console`: a live rewriting line on a terminal,
one line per status change when stderr is a pipe or a file, nothing with `-q`. A closed stdout
(`deploy status X | head -1`) ends the command quietly with exit 141 (`closed_pipe()`), never a
traceback; a closed stderr silences the messages and the command carries on.

Use in a subcommand:

    from sagemaker_tf_deploy.core import output
    output.add_output_argument(parser)                 # or rely on cli's `common` parent
    ...
    output.emit(result_dict, args.output, table=lambda r: [f"endpoint {r['endpoint']} ..."])
"""

from __future__ import annotations

import datetime as _dt
import decimal
import json
import os
import sys
from pathlib import PurePath
from typing import Any, Callable, Iterable, Protocol

FORMATS = ("table", "json", "text")
DEFAULT_FORMAT = "table"


def add_output_argument(parser, default: str = DEFAULT_FORMAT) -> None:
    parser.add_argument("--output", choices=FORMATS, default=default,
                        help=f"result format on stdout: table (for people, default), json (ISO 8601 "
                             f"dates, no ResponseMetadata) or text (tab-separated)")


# --- JSON --------------------------------------------------------------------------------------

def jsonable(obj: Any) -> Any:
    """A copy of OBJ that json.dumps takes: ResponseMetadata dropped at every level, datetimes and
    dates as ISO 8601, bytes as UTF-8 text (or hex), sets as sorted lists, paths as strings."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items() if k != "ResponseMetadata"}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, (set, frozenset)):
        return sorted(jsonable(v) for v in obj)
    if isinstance(obj, _dt.datetime):
        if obj.tzinfo is None:
            obj = obj.replace(tzinfo=_dt.timezone.utc)
        return obj.isoformat()
    if isinstance(obj, _dt.date):
        return obj.isoformat()
    if isinstance(obj, decimal.Decimal):
        return float(obj)
    if isinstance(obj, bytes):
        try:
            return obj.decode("utf-8")
        except UnicodeDecodeError:
            return obj.hex()
    if isinstance(obj, PurePath):
        return str(obj)
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    return str(obj)


def to_json(obj: Any) -> str:
    return json.dumps(jsonable(obj), indent=2, sort_keys=False)


# --- text --------------------------------------------------------------------------------------

def _scalar(value: Any) -> str:
    value = jsonable(value)
    if value is None:
        return "None"          # as the AWS CLI's text output prints a missing value
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"))
    return str(value).replace("\t", " ").replace("\n", " ")


def _leaves(obj: Any, prefix: str = "") -> Iterable[tuple[str, Any]]:
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k == "ResponseMetadata":
                continue
            yield from _leaves(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(obj, (list, tuple)) and obj and all(isinstance(v, (dict, list, tuple)) for v in obj):
        for i, v in enumerate(obj):
            yield from _leaves(v, f"{prefix}.{i}" if prefix else str(i))
    else:
        yield prefix, obj


def text_lines(obj: Any) -> list[str]:
    """--output text: rows of a list of records, or `key<TAB>value` leaves of a record."""
    obj = jsonable(obj)
    if isinstance(obj, list):
        if all(isinstance(r, dict) for r in obj):
            return ["\t".join(_scalar(v) for v in r.values()) for r in obj]
        return [_scalar(v) for v in obj]
    if isinstance(obj, dict):
        return [f"{k}\t{_scalar(v)}" for k, v in _leaves(obj)]
    return [_scalar(obj)]


# --- emitting ----------------------------------------------------------------------------------

def emit(result: Any, fmt: str | None, table: Callable[[Any], Iterable[str] | str] | None = None,
         stream=None) -> None:
    """Print RESULT on stdout in FMT ('table' uses TABLE(result) -> lines; without it, text)."""
    stream = stream or sys.stdout
    fmt = fmt or DEFAULT_FORMAT
    if fmt == "json":
        lines: Iterable[str] = [to_json(result)]
    elif fmt == "text" or table is None:
        lines = text_lines(result)
    else:
        rendered = table(result)
        lines = [rendered] if isinstance(rendered, str) else rendered
    for line in lines:
        stream.write(f"{line}\n")
    stream.flush()


def closed_pipe() -> int:
    """Call on BrokenPipeError writing stdout: silence further writes (including the interpreter's
    final flush, which would print a second error) and return the exit code, 141."""
    from .errors import BROKEN_PIPE

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass
    return BROKEN_PIPE


# --- progress on stderr ------------------------------------------------------------------------

class Reporter(Protocol):
    """Where the AWS-facing modules (endpoint, waiting, staging, ...) send their messages and
    progress: they never print themselves. Console is the command line's."""

    def info(self, message: str) -> None: ...
    def progress(self, what: str, status: str, elapsed: float) -> None: ...
    def progress_done(self) -> None: ...


class Console:
    """The Reporter of the command line: messages and a live progress line on stderr.

    On a terminal the progress line rewrites itself (`digits: Creating (3m12s)`); on a pipe or file
    there is one line per status change; with quiet=True nothing but errors (printed by main()).
    A closed or failing stderr never stops the command: messages are dropped from then on.
    """

    def __init__(self, stream=None, quiet: bool = False):
        self.stream = stream or sys.stderr
        self.quiet = quiet
        try:
            self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        except (OSError, ValueError):
            self.tty = False
        self._last: tuple[str, str] | None = None
        self._open_line = False
        self._dead = False

    def _write(self, text: str) -> None:
        if self._dead:
            return
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):      # BrokenPipeError, closed file: keep working, stop talking
            self._dead = True

    def info(self, message: str) -> None:
        if self.quiet:
            return
        self._end_line()
        self._write(message + "\n")

    def error(self, message: str) -> None:
        """Printed even when quiet."""
        self._end_line()
        self._write(message + "\n")

    def progress(self, what: str, status: str, elapsed: float) -> None:
        if self.quiet:
            return
        mins, secs = divmod(int(elapsed), 60)
        line = f"{what}: {status} ({mins:d}m{secs:02d}s)"
        if self.tty:
            self._write("\r" + line.ljust(60))
            self._open_line = True
        elif (what, status) != self._last:
            self._write(line + "\n")
        self._last = (what, status)

    def progress_done(self) -> None:
        self._end_line()
        self._last = None

    def _end_line(self) -> None:
        if self._open_line:
            self._open_line = False
            self._write("\n")
