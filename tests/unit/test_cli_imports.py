"""`cleanroom --help` answers before the heavy libraries load: each verb's module is imported when it runs.

The test reads which modules the real command left in sys.modules, never a clock:
a timed assertion would pass or fail with the machine's load. bench/README.md has the timings.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

# Libraries that take tenths of a second each to import; a `--help` needs none of them.
HEAVY = ("kopf", "kubernetes", "pydicom", "jupyterhub", "minio", "cryptography", "jwt", "numpy", "urllib3")
# cleanroom's own modules that pull those in: the verbs' implementations and the cores under them.
OURS = ("cleanroom.cli_audit", "cleanroom.cli_deid", "cleanroom.cli_hub", "cleanroom.audit", "cleanroom.deid")


# Runs the command as `python -m cleanroom.cli ARGS` does, then prints what is in sys.modules. (-X importtime
# would miss a module imported through importlib, as the verbs are.)
RUN_AND_LIST_MODULES = """
import json, runpy, sys
sys.argv = ["cleanroom", *sys.argv[1:]]
try:
    runpy.run_module("cleanroom.cli", run_name="__main__", alter_sys=True)
except SystemExit:
    pass
print("MODULES " + json.dumps(sorted(sys.modules)))
"""


def imported_by(*args: str) -> set[str]:
    """Every module in sys.modules after `cleanroom ARGS` has run (or printed its help)."""
    done = subprocess.run(
        [sys.executable, "-c", RUN_AND_LIST_MODULES, *args], capture_output=True, text=True, timeout=120
    )
    listed = [line for line in done.stdout.splitlines() if line.startswith("MODULES ")]
    assert listed, f"`cleanroom {' '.join(args)}` did not finish: {done.stderr[-2000:]}"
    return set(json.loads(listed[-1].removeprefix("MODULES ")))


def heavy_in(names: set[str]) -> list[str]:
    return sorted(
        name
        for name in names
        if name.split(".")[0] in HEAVY or any(name == own or name.startswith(own + ".") for own in OURS)
    )


@pytest.mark.parametrize(
    "args",
    [
        ("--help",),
        ("audit", "--help"),
        ("audit", "verify", "--help"),
        ("deid", "--help"),
        ("snapshot", "--help"),
        ("snapshot", "materialize-grant", "--help"),
        ("token", "issue", "--help"),
        ("hub", "--help"),
        ("operator", "--help"),
    ],
)
def test_help_imports_no_heavy_module(args: tuple[str, ...]) -> None:
    names = imported_by(*args)
    assert "argparse" in names
    assert heavy_in(names) == []


def test_a_verb_imports_its_module_when_it_runs(tmp_path: Path) -> None:
    # The control: the same reading sees the imports when a verb runs, so an empty list above means something.
    names = imported_by("audit", "fingerprint", str(tmp_path / "missing.pem"))
    assert "cleanroom.cli_audit" in names
    assert "cryptography" in {name.split(".")[0] for name in names}


def test_grammar_names_the_variable_the_materializer_reads() -> None:
    from cleanroom.cli_grammar import GRANT_URL_VARIABLE
    from cleanroom.snapshots.grant import GRANT_URL_VARIABLE as read

    assert read == GRANT_URL_VARIABLE
