"""bench.run refuses unknown --models/--stacks names with one line naming what exists (exit 2),
before it starts anything (no wrk, Docker or TensorFlow needed)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bench import run
from bench.models import MODELS
from bench.stacks import HTTP_STACKS

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("flag, value, unknown, known", [
    ("--models", "nope", ["nope"], list(MODELS)),
    ("--models", "mlp,nope,zz", ["nope", "zz"], list(MODELS)),
    ("--stacks", "ours,foo", ["foo"], ["tf", *HTTP_STACKS]),
])
def test_unknown_names_exit_2_naming_what_exists(capsys, flag, value, unknown, known):
    with pytest.raises(SystemExit) as e:
        run.parse_args([flag, value])
    assert e.value.code == 2
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert flag in lines[0]
    for name in unknown:
        assert repr(name) in lines[0]
    for name in known:
        assert name in lines[0].split("known:", 1)[1]
    assert "Traceback" not in err


def test_known_names_are_accepted():
    a = run.parse_args(["--models", ",".join(MODELS), "--stacks", "tf,ours"])
    assert a.models.split(",") == list(MODELS)


def test_the_command_line_says_so_without_a_traceback():
    r = subprocess.run([sys.executable, "-m", "bench.run", "--models", "nope"], cwd=REPO,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip() == ("bench.run: --models: unknown 'nope'; known: " + ", ".join(MODELS))
    assert "Traceback" not in r.stderr and "KeyError" not in r.stderr


def test_rounds_report_the_median_of_each_figure_and_keep_the_rounds():
    def level(rps, p50, cpu, model_cpu, non_2xx=0):
        return {"connections": 32, "rps": rps, "p50_ms": p50, "p99_ms": p50 * 3, "non_2xx": non_2xx,
                "cpu_ms_per_request": {"total": cpu, "roles": {"http": cpu - model_cpu, "model": model_cpu}}}
    rounds = [level(100.0, 9.0, 3.0, 1.0), level(300.0, 3.0, 2.0, 0.5, non_2xx=2), level(200.0, 5.0, 4.0, 2.0)]
    m = run.median_level(rounds)
    assert (m["rps"], m["p50_ms"], m["p99_ms"], m["connections"]) == (200.0, 5.0, 15.0, 32)
    assert m["cpu_ms_per_request"]["total"] == 3.0
    assert m["cpu_ms_per_request"]["roles"] == {"http": 2.0, "model": 1.0}
    assert [r["rps"] for r in m["rounds"]] == [100.0, 300.0, 200.0]
    assert m["non_2xx"] == 2                                      # a failure in any round is reported, not a median
    two = run.median_level(rounds[:2])
    assert two["rps"] == 200.0 and two["connections"] == 32       # an even count: the mean of the middle two


def test_rounds_below_one_are_refused(capsys):
    with pytest.raises(SystemExit) as e:
        run.parse_args(["--rounds", "0"])
    assert e.value.code == 2 and "--rounds" in capsys.readouterr().err
