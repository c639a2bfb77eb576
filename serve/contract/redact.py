"""What may leave the process: error messages for callers, and log lines.

A caller is told what to fix and nothing of the inside: no traceback, no file-system path,
no secret. Logs keep paths (the operator needs them) but never a credential. The secret
values come from ``settings.secret_values`` (variables whose names say they hold one) plus
anything shaped like an AWS access key id.

A log line is one line: every value put into a log message (the ``%s`` arguments, which is
where a URL path, a model name, a header or an exception's text goes) and the last line of a
logged exception have their control characters shown as escapes (``\r``, ``\n``, ``\x1b``),
never obeyed, so no caller can end a line and forge the next one. The format strings are
ours and keep their own newlines. ``SecretFilter`` does both and sits on every log handler.
"""
from __future__ import annotations

import io
import logging
import re
import sys
import threading
import traceback
from typing import Iterable

MASK = "***"
_PY_TRACEBACK = re.compile(r"\s*Traceback \(most recent call last\):.*", re.S)
# TensorFlow puts its stack between "defined at (most recent call last):" and its complaint.
_DEFINED_AT = re.compile(r"^[^\n]*defined at \(most recent call last\):[^\n]*\n?", re.M)
_FRAME = re.compile(r'^[ \t]*File "[^"\n]*", line \d+[^\n]*\n?(?:[ \t]{4,}(?!File ")[^\n]*\n?)?', re.M)
# An absolute path of two or more parts (also in file:// URLs and after ':' in PATH-like lists);
# not a media type (application/json), a relative name or the path part of an http:// URL.
_PATH = re.compile(r"(?<![\w.~@/-])(?:file://)?/(?:[\w.@+-]+/)+([\w.@+-]*)")
_AWS_KEY_ID = re.compile(r"(?<![A-Z0-9])(?:AKIA|ASIA)[A-Z0-9]{16}(?![A-Z0-9])")
# C0 and C1 controls, DEL, and Unicode's own line and paragraph separators
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED = {"\r": "\\r", "\n": "\\n", "\t": "\\t"}


def escape_controls(text: str) -> str:
    """TEXT with its control characters shown as escapes: what a log line may carry of a caller's."""
    return _CONTROL.sub(lambda m: _NAMED.get(m.group(), m.group().encode("unicode_escape").decode("ascii")), text)


def _escaped_arg(arg):
    if isinstance(arg, str):
        return escape_controls(arg)
    if isinstance(arg, (bytes, bytearray)):
        return escape_controls(repr(bytes(arg)))
    if isinstance(arg, BaseException):  # an exception's text is often the caller's input
        return escape_controls(str(arg))
    return arg


def _escaped_traceback(exc_info) -> str:
    """The traceback as logging formats it, with the exception's own text (its last lines, which
    may quote a request) escaped; the frames are the code's and stay as they are."""
    etype, value, tb = exc_info
    frames = "".join(traceback.format_exception(etype, value, tb, chain=True))
    if value is None:
        return frames.rstrip("\n")
    text = str(value)
    if text and text != escape_controls(text):
        frames = frames.replace(text, escape_controls(text))
    return frames.rstrip("\n")


class SecretFilter(logging.Filter):
    """Masks secrets in log records (message, arguments and traceback) and in caller messages."""

    def __init__(self, secrets: Iterable[str] = ()):
        super().__init__()
        # longest first, so a secret that contains another is masked whole
        self._secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def mask(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return _AWS_KEY_ID.sub(MASK, text)

    def for_caller(self, message: str) -> str:
        """An error message fit to send: secrets masked, stack frames cut, paths reduced to their last part."""
        message = self.mask(message)  # first: a secret may look like a path and be cut in half below
        message = _PY_TRACEBACK.sub("", message)
        message = _FRAME.sub("", _DEFINED_AT.sub("", message))
        message = _PATH.sub(lambda m: m.group(1) or "<path>", message)
        return re.sub(r"\n\s*\n", "\n", message).strip()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            record.args = (tuple(_escaped_arg(a) for a in record.args) if isinstance(record.args, tuple)
                           else {k: _escaped_arg(v) for k, v in record.args.items()}
                           if isinstance(record.args, dict) else _escaped_arg(record.args))
        elif not isinstance(record.msg, str) and record.msg is not None:  # log.error(exc)
            record.msg = _escaped_arg(record.msg)
        message = record.getMessage()
        masked = self.mask(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            record.exc_text = _escaped_traceback(record.exc_info)
        if record.exc_text:
            record.exc_text = self.mask(record.exc_text)
        return True


class MaskingStream(io.TextIOBase):
    """sys.stdout / sys.stderr through the same filter as the logs: user code's print(), writes to
    sys.stderr and anything else that writes text there reach the log with its secrets masked.
    Line by line, so a secret written in pieces is masked whole once its line ends."""

    def __init__(self, stream, secrets: SecretFilter):
        super().__init__()
        self._stream = stream
        self._secrets = secrets
        self._pending = ""
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        with self._lock:
            self._pending += text
            if "\n" in self._pending:
                done, _, self._pending = self._pending.rpartition("\n")
                self._stream.write(self._secrets.mask(done + "\n"))
                self._stream.flush()
        return len(text)

    def flush(self) -> None:
        with self._lock:
            if self._pending:
                self._stream.write(self._secrets.mask(self._pending))
                self._pending = ""
            self._stream.flush()

    def fileno(self) -> int:
        return self._stream.fileno()

    def isatty(self) -> bool:
        return self._stream.isatty()

    @property
    def encoding(self):
        return getattr(self._stream, "encoding", "utf-8")

    def writable(self) -> bool:
        return True


def mask_standard_streams(secrets: SecretFilter) -> None:
    """Route print(), sys.stderr writes and warnings through SECRETS (each process calls it once)."""
    if not isinstance(sys.stdout, MaskingStream):
        sys.stdout = MaskingStream(sys.stdout, secrets)
    if not isinstance(sys.stderr, MaskingStream):
        sys.stderr = MaskingStream(sys.stderr, secrets)
    logging.captureWarnings(True)  # warnings.warn() becomes a log record, which the filter masks
