"""Two checkouts on one machine: the second one's `make cluster-up` is refused with a message naming the first,
instead of deleting its cluster (they share ports, the kwok cluster's name and the real node)."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def claim(owner_file: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", f"source {ROOT}/hack/lib.sh && claim_stack && echo claimed"],
        env={
            "CLEANROOM_STACK_OWNER_FILE": str(owner_file),
            "PATH": "/usr/bin:/bin",
            "HOME": str(Path.home()),
        },
        capture_output=True,
        text=True,
    )


def test_a_second_checkouts_stack_is_refused_while_the_first_is_up(tmp_path: Path) -> None:
    other = tmp_path / "other-checkout"
    (other / ".cluster").mkdir(parents=True)
    owner = tmp_path / "owner"
    owner.write_text(f"{other}\n")
    refused = claim(owner)
    assert refused.returncode != 0
    assert f"another checkout ({other})" in refused.stderr and "make down" in refused.stderr
    assert owner.read_text().strip() == str(other)


def test_the_stack_is_claimed_when_free_or_when_the_other_checkout_is_down(tmp_path: Path) -> None:
    owner = tmp_path / "owner"
    assert claim(owner).stdout.strip() == "claimed" and owner.read_text().strip() == str(ROOT)
    owner.write_text(str(tmp_path / "gone-checkout"))
    assert claim(owner).returncode == 0 and owner.read_text().strip() == str(ROOT)
