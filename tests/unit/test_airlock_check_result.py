"""The checks run in a Job of their own, and what it writes back is judged before it counts: the plan's
Checking gate (start the Job, wait, take a whole result of this request, reject on anything else), and
`check_result.judge_result` against results a taken-over or broken checker could write."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest

from cleanroom.airlock import ExportedFile, SnapshotFingerprints, run_checks
from cleanroom.airlock.check_result import (
    MAX_FINDINGS,
    MAX_RESULT_BYTES,
    MAX_TEXT,
    Subject,
    build_result,
    checker_stopped,
    judge_result,
)
from cleanroom.airlock.plan import check_subject, plan_export, quarantined_status
from cleanroom.api import ExportPolicy, to_json
from tests.unit.test_airlock_plan import NOW, SETTINGS, SNAPSHOT, observed, request

METRICS = b"fold,dice\n1,0.871\n2,0.858\n"
ENTRY = {"path": "results/metrics.csv", "digest": "sha256:" + "12" * 32, "size": len(METRICS)}
SUBJECT = Subject("u-1", SNAPSHOT, (("results/metrics.csv", ENTRY["digest"]),))


def result(subject: Subject = SUBJECT, data: bytes = METRICS) -> dict[str, Any]:
    """What the checker writes for ``data`` (the real checks, against an empty snapshot)."""
    checks = run_checks([ExportedFile("results/metrics.csv", data)], SnapshotFingerprints(), ExportPolicy())
    return build_result(subject, checks)


def raw(document: Any) -> bytes:
    return json.dumps(document).encode()


def checking(**extra: Any) -> dict[str, Any]:
    """The status once the copy is verified into quarantine."""
    status, _ = quarantined_status([ENTRY], "k")
    return {"phase": "Checking", "dataset": "prostate", "snapshot": SNAPSHOT, **to_json(status), **extra}


RUNNING = {"status": {"active": 1, "startTime": "2026-11-20T11:59:00Z"}}


def failed_job(reason: str) -> dict[str, Any]:
    return {"status": {"conditions": [{"type": "Failed", "status": "True", "reason": reason}]}}


# -- the plan's Checking gate ---------------------------------------------------------------------------------


def test_a_verified_copy_starts_the_check_job_and_the_operator_parses_nothing() -> None:
    plan = plan_export(request(checking()), observed(), SETTINGS)
    assert plan.check and plan.phase == "Checking" and not plan.promote
    assert check_subject("u-1", checking()) == SUBJECT


def test_the_checks_wait_while_the_job_runs() -> None:
    plan = plan_export(request(checking()), observed(check_job=RUNNING), SETTINGS)
    assert plan.phase == "Checking" and not plan.check and plan.recheck_at == NOW + timedelta(seconds=5)


def test_a_whole_result_is_recorded_and_judged_again() -> None:
    plan = plan_export(request(checking()), observed(check_job=RUNNING, check_result=raw(result())), SETTINGS)
    assert plan.again and plan.remove_jobs and not plan.purge
    assert [c.name for c in plan.status.checks or ()] == [
        "NoDicom",
        "NoSnapshotData",
        "NoIdentifiers",
        "ExportPolicy",
    ]
    assert plan.conditions[0].type == "Checked" and plan.conditions[0].status == "True"
    assert [(s.action, s.outcome) for s in plan.audit] == [("export.checked", "success")]
    # The next pass goes on to the approvers.
    after = plan_export(request(checking(checks=to_json(plan.status)["checks"])), observed(), SETTINGS)
    assert after.phase == "AwaitingApproval"


def test_a_result_with_a_failed_check_rejects_on_the_next_pass() -> None:
    dicom = b"\0" * 128 + b"DICM" + b"\0" * 64
    document = result(data=dicom)
    plan = plan_export(request(checking()), observed(check_result=raw(document)), SETTINGS)
    assert plan.conditions[0].status == "False" and plan.audit[0].outcome == "failure"
    after = plan_export(request(checking(checks=to_json(plan.status)["checks"])), observed(), SETTINGS)
    assert after.phase == "Rejected" and after.purge and "DICM magic" in after.conditions[0].message


@pytest.mark.parametrize(
    ("job", "ends", "said"),
    [
        (
            failed_job("PodFailurePolicy"),
            ({"reason": "OOMKilled", "exitCode": 137, "message": ""},),
            "ran out of memory and was killed (OOMKilled)",
        ),
        (failed_job("DeadlineExceeded"), (), "ran past its deadline"),
        (
            failed_job("PodFailurePolicy"),
            ({"reason": "Error", "exitCode": 1, "message": "Traceback\nMemoryError: \x1b[2Jgone"},),
            "exited with status 1; its last words: MemoryError: \ufffd[2Jgone",
        ),
        (failed_job("BackoffLimitExceeded"), (), "every try of the check Job failed"),
    ],
)
def test_a_checker_that_stopped_rejects_the_request_and_deletes_the_copies(
    job: dict[str, Any], ends: tuple[dict[str, Any], ...], said: str
) -> None:
    plan = plan_export(request(checking()), observed(check_job=job, check_terminations=ends), SETTINGS)
    assert plan.phase == "Rejected" and plan.purge and plan.remove_jobs
    rejected = next(c for c in plan.conditions if c.type == "Rejected")
    assert rejected.reason == "CheckerFailed" and said in rejected.message, rejected.message
    assert next(c for c in plan.conditions if c.type == "Checked").status == "False"
    assert [s.action for s in plan.audit] == ["export.checked", "export.rejected", "export.deleted"]


def test_a_passing_result_does_not_count_once_the_checker_failed() -> None:
    """Killed after writing, or a pass written by something that then crashed: the failure wins."""
    job = failed_job("PodFailurePolicy")
    ends = ({"reason": "OOMKilled", "exitCode": 137, "message": ""},)
    plan = plan_export(
        request(checking()),
        observed(check_job=job, check_terminations=ends, check_result=raw(result())),
        SETTINGS,
    )
    assert plan.phase == "Rejected" and plan.status.checks is None


def test_a_check_job_that_ended_without_a_result_rejects_after_the_grace() -> None:
    ended = {"status": {"succeeded": 1, "completionTime": "2026-11-20T11:59:30Z"}}
    assert plan_export(request(checking()), observed(check_job=ended), SETTINGS).phase == "Checking"
    later = plan_export(
        request(checking()), observed(check_job=ended, now=NOW + timedelta(minutes=2)), SETTINGS
    )
    assert later.phase == "Rejected" and "ended without writing its result" in later.conditions[0].message


def test_a_request_not_checked_in_time_expires() -> None:
    plan = plan_export(
        request(checking()), observed(check_job=RUNNING, now=NOW + timedelta(days=2)), SETTINGS
    )
    assert plan.phase == "Expired" and plan.purge and plan.remove_jobs


# -- results a taken-over or broken checker could write --------------------------------------------------------


def _forged() -> list[tuple[str, bytes, str]]:
    def edited(change: Any) -> bytes:
        document = result()
        change(document)
        return raw(document)

    def first(document: dict[str, Any]) -> dict[str, Any]:
        return dict(document["checks"][0])

    return [
        ("cut short", raw(result())[:-40], "not JSON"),
        ("not UTF-8", b"\xff\xfe" + raw(result()), "not JSON"),
        ("too large", b" " * (MAX_RESULT_BYTES + 1), "larger than"),
        ("nested to exhaust the parser", b"[" * 100_000 + b"]" * 100_000, "not JSON"),
        ("another kind", edited(lambda d: d.update(kind="cleanroom.dev/export-copy")), "not a document"),
        ("another request", edited(lambda d: d.update(request="u-2")), "another request"),
        ("another snapshot", edited(lambda d: d.update(snapshot="sha256:" + "00" * 32)), "another snapshot"),
        (
            "other files",
            raw(result(Subject("u-1", SNAPSHOT, (("results/metrics.csv", "sha256:" + "34" * 32),)))),
            "other files",
        ),
        ("a check left out", edited(lambda d: d["checks"].pop(0)), "exactly the checks"),
        ("a check twice", edited(lambda d: d["checks"].append(d["checks"][0])), "exactly the checks"),
        ("a verdict as text", edited(lambda d: d["checks"][0].update(passed="true")), "no verdict"),
        (
            "a pass with findings",
            edited(
                lambda d: d["checks"][0].update(findings=[{"file": "results/metrics.csv", "detail": "DICM"}])
            ),
            "passed with findings",
        ),
        (
            "a failure with none",
            edited(lambda d: d["checks"][0].update(passed=False)),
            "failed with none",
        ),
        ("a pass that looked at nothing", edited(lambda d: d["checks"][1].update(lookedAt=[])), "looked at"),
        (
            "a finding about another file",
            edited(
                lambda d: d["checks"][0].update(
                    passed=False, findings=[{"file": "../x", "detail": "DICM magic"}]
                )
            ),
            "not exported",
        ),
        ("findings as text", edited(lambda d: d["checks"][0].update(findings="none")), "looked at and found"),
        ("no checks", edited(lambda d: d.pop("checks")), "exactly the checks"),
        ("an array", raw([first(result())]), "not a document"),
    ]


@pytest.mark.parametrize(("case", "data", "problem"), _forged(), ids=[c for c, _, _ in _forged()])
def test_a_forged_or_corrupted_result_is_never_a_pass(case: str, data: bytes, problem: str) -> None:
    judged = judge_result(data, SUBJECT)
    assert not judged.checks and problem in judged.problem, (case, judged.problem)
    plan = plan_export(request(checking()), observed(check_job=RUNNING, check_result=data), SETTINGS)
    assert plan.phase == "Rejected" and plan.purge and plan.status.checks is None
    assert next(c for c in plan.conditions if c.type == "Rejected").reason == "CheckResultInvalid"


def test_what_a_checker_writes_is_cut_and_cleaned_before_it_is_shown() -> None:
    document = result()
    noisy = "results/metrics.csv: \x1b]0;owned\x07 \u202eevil" + "x" * 2 * MAX_TEXT
    document["checks"][2].update(
        passed=False,
        lookedAt=[noisy],
        findings=[{"file": "results/metrics.csv", "detail": "P-0001 \x00"}] * (MAX_FINDINGS + 5),
    )
    judged = judge_result(raw(document), SUBJECT)
    identifiers = judged.checks[2]
    [line] = identifiers["lookedAt"]
    assert len(line) == MAX_TEXT and "\x1b" not in line and "\u202e" not in line and "\x07" not in line
    assert len(identifiers["findings"]) == MAX_FINDINGS + 1
    assert identifiers["findings"][-1]["detail"] == "and 5 more findings"
    assert identifiers["findings"][0]["detail"] == "P-0001 \ufffd"


def test_checker_stopped_is_empty_while_the_job_has_not_failed() -> None:
    assert checker_stopped(None, ()) == ""
    assert checker_stopped(RUNNING, ()) == ""
    assert checker_stopped({"status": {"succeeded": 1}}, ()) == ""


def test_no_mutation_of_a_result_makes_the_judge_raise_or_pass_a_failed_check() -> None:
    """Every value of a result replaced by values of other shapes, one at a time: the judge answers with a
    problem or with checks, never an exception (which would leave the request stuck), and a check the
    checker reported failed never comes out passed."""
    import random

    picker = random.Random(17)
    strange: list[Any] = [None, 0, 1.5, True, "", "x" * 5000, [], {}, [None], {"name": "NoDicom"}, ["\x00"]]
    base = result(data=b"\0" * 128 + b"DICM")

    def paths(node: Any, at: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        found = [at]
        if isinstance(node, dict):
            found += [p for k, v in node.items() for p in paths(v, (*at, k))]
        elif isinstance(node, list):
            found += [p for i, v in enumerate(node) for p in paths(v, (*at, i))]
        return found

    for path in paths(base)[1:]:
        for value in picker.sample(strange, 4):
            document = json.loads(json.dumps(base))
            node = document
            for step in path[:-1]:
                node = node[step]
            node[path[-1]] = value
            judged = judge_result(raw(document), SUBJECT)
            assert bool(judged.problem) != bool(judged.checks), (path, value)
            if judged.checks:
                assert next(c for c in judged.checks if c["name"] == "NoDicom")["passed"] is False, (
                    path,
                    value,
                )
