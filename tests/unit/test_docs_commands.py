"""Every `$ deploy ...` command shown in docs/deploy.md, docs/transform.md, docs/migration.md and
docs/multi-model.md still parses with the command's own parser (the subcommand exists, every flag
and choice is accepted), and each documented refusal that needs no AWS call (an error line and
exit 2) is printed word for word (issue 24: the docs and the tool agree). `console_blocks` reads
the docs' console blocks for tests/deploy/test_docs_walkthrough.py, which runs every line of them
(against moto, or the amd64 image) and compares its output with the doc's; the README's commands
are run by tests/host/test_readme.py."""

from __future__ import annotations

import dataclasses
import re
import shlex
from pathlib import Path

import pytest

from sagemaker_tf_deploy.commands.main import _finish_parser, build_parser, main

DOCS = [Path(__file__).resolve().parents[2] / "docs" / name
        for name in ("deploy.md", "transform.md", "migration.md", "multi-model.md")]


@dataclasses.dataclass
class Entry:
    """One `$ ` line of a console block: the command (comment cut off), its comment, the lines
    shown under it, the exit code shown (`$ echo $?` after it, or a last line `(exit N)` or
    `[exit N]`), or None,
    and where it is (doc, line number)."""
    doc: str
    line: int
    command: str
    comment: str
    out: list[str]
    code: int | None
    indent: int = 0
    out_lines: tuple[int, int] = (0, 0)     # the output's line numbers in the doc, first and past the last


def console_blocks(doc: Path) -> list[list[Entry]]:
    """The ```console blocks of DOC (indented ones too), each as its `$ ` entries in order. A
    `$ echo $?` entry is folded into the one before it as its exit code."""
    blocks = []
    lines = doc.read_text().splitlines()
    i = 0
    while i < len(lines):
        m = re.match(r"^(\s*)```(\w*)$", lines[i])
        if not m:
            i += 1
            continue
        indent, lang = len(m.group(1)), m.group(2)
        body, i = [], i + 1
        while i < len(lines) and lines[i].strip() != "```":
            body.append((i + 1, lines[i][indent:]))
            i += 1
        i += 1
        if lang != "console":
            continue
        entries: list[Entry] = []
        for number, text in body:
            if text.startswith("$ "):
                command, _, comment = text[2:].partition("  #")
                entries.append(Entry(doc.name, number, command.strip(), comment.strip(" #"), [], None, indent,
                                     (number + 1, number + 1)))
            elif entries:
                entries[-1].out.append(text)
                entries[-1].out_lines = (entries[-1].out_lines[0], number + 1)
        folded: list[Entry] = []
        for entry in entries:
            if entry.command == "echo $?" and folded:
                folded[-1].code = int(entry.out[0])
                continue
            while entry.out and not entry.out[-1].strip():          # blank lines between commands
                entry.out.pop()
                entry.out_lines = (entry.out_lines[0], entry.out_lines[1] - 1)
            if entry.out and re.fullmatch(r"\(exit \d+\)|\[exit \d+\]", entry.out[-1]):
                entry.code = int(entry.out.pop()[6:-1])
                entry.out_lines = (entry.out_lines[0], entry.out_lines[1] - 1)
            folded.append(entry)
        blocks.append(folded)
    return blocks


def console_commands() -> list[tuple[str, str, list[str], int | None]]:
    """(doc, command, output lines, exit code or None) of each `$ deploy` line."""
    return [(e.doc, e.command, e.out, e.code) for doc in DOCS for block in console_blocks(doc) for e in block
            if e.command.startswith("deploy ")]


COMMANDS = console_commands()


def argv_of(command: str) -> list[str]:
    words = shlex.split(command, comments=True)
    for stop in ("|", ">", "&&", "2>&1", ";", "&"):
        if stop in words:
            words = words[:words.index(stop)]
    return words[1:]


def test_the_docs_show_commands():
    per_doc = {doc.name: sum(1 for d, *_ in COMMANDS if d == doc.name) for doc in DOCS}
    assert all(n >= 3 for n in per_doc.values()), per_doc


@pytest.mark.parametrize("doc, command", [(d, c) for d, c, *_ in COMMANDS if "..." not in argv_of(c)])
def test_every_documented_command_parses(doc, command):
    parser = _finish_parser(build_parser())
    parser.exit_on_error = False
    try:
        parser.parse_args(argv_of(command))
    except SystemExit as exc:       # argparse's own exit: an unknown flag, a bad choice, a missing argument
        pytest.fail(f"{doc}: `{command}` is refused by deploy's parser (exit {exc.code})")


REFUSALS = [(d, c, out, code) for d, c, out, code in COMMANDS
            if code == 2 and len(out) == 1 and out[0].startswith("deploy: error: ") and "..." not in argv_of(c)]


def test_some_refusals_are_documented():
    assert len(REFUSALS) >= 1


@pytest.mark.parametrize("doc, command, out, code", REFUSALS)
def test_documented_refusals_hold_word_for_word(capsys, aws_env, aws_calls, doc, command, out, code):
    assert main(argv_of(command)) == code
    assert capsys.readouterr().err.strip() == out[0], f"{doc}: `{command}`"
    assert aws_calls == []
