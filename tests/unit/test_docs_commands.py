"""Every `$ deploy ...` command shown in docs/deploy.md, docs/transform.md, docs/migration.md and
docs/multi-model.md still parses with the command's own parser (the subcommand exists, every flag
and choice is accepted), and each documented refusal that needs no AWS call (an error line and
exit 2) is printed word for word (issue 24: the docs and the tool agree). The walk-throughs with
AWS output are run against moto by tests/host/test_readme.py (README) and the deploy tests."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from sagemaker_tf_deploy.commands.main import _finish_parser, build_parser, main

DOCS = [Path(__file__).resolve().parents[2] / "docs" / name
        for name in ("deploy.md", "transform.md", "migration.md", "multi-model.md")]


def console_commands() -> list[tuple[str, str, list[str], int | None]]:
    """(doc, command, output lines, exit code shown by `echo $?` or None) of each `$ deploy` line."""
    found = []
    for doc in DOCS:
        for block in re.findall(r"```[a-z]*\n(.*?)```", doc.read_text(), re.S):
            entries: list[list] = []
            for line in block.splitlines():
                if line.startswith("$ "):
                    entries.append([line[2:], [], None])
                elif entries:
                    entries[-1][1].append(line)
            for i, (command, out, _) in enumerate(entries):
                code = None
                if i + 1 < len(entries) and entries[i + 1][0] == "echo $?" and entries[i + 1][1]:
                    code = int(entries[i + 1][1][0])
                if command.startswith("deploy "):
                    found.append((doc.name, command, out, code))
    return found


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
            if code == 2 and len(out) == 1 and out[0].startswith("deploy: error: ")]


def test_some_refusals_are_documented():
    assert len(REFUSALS) >= 1


@pytest.mark.parametrize("doc, command, out, code", REFUSALS)
def test_documented_refusals_hold_word_for_word(capsys, aws_env, aws_calls, doc, command, out, code):
    assert main(argv_of(command)) == code
    assert capsys.readouterr().err.strip() == out[0], f"{doc}: `{command}`"
    assert aws_calls == []
