"""The disclosure checker's result: the document the check Job writes into the store (`build_result`), and
how the operator judges it when it reads it back (`judge_result`). Pure.

The checker parses files a modeller chose, so the operator treats what it writes as untrusted: a parser flaw
may have turned the checker into the modeller's program. A result counts only when it is whole and of this
request: at most ``MAX_RESULT_BYTES`` of JSON of the kind the checker writes, naming this request, its
snapshot and exactly the quarantined files (path and digest, in order), with every check of ``CHECKS``
once and in order, each check's verdict agreeing with its findings (passed exactly when it found
nothing), every finding naming a quarantined file (or none, for all files), and every check saying it
looked at every file. Anything else is a problem, and the request is rejected: never passed. Strings are
cut to ``MAX_TEXT`` characters and their control characters replaced, since they reach the status, the
Events and the audit trail; long lists of findings are cut with a note (a failed check stays failed).

What no check of the document can tell: a checker taken over by a file may still write a well-formed pass.
That is why it runs with nothing to reach but its own grant's objects, and why two people look at the files.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cleanroom.airlock.checks import CHECKS, CheckResult

RESULT_KIND = "cleanroom.dev/export-check-result"
# The operator reads no more of the result object than this (a taken-over checker may write any size).
MAX_RESULT_BYTES = 1 << 20
MAX_TEXT = 500
MAX_FINDINGS = 100
# Each check looks at each file (at most 64, the CRD's limit) and may add a line for all files together.
MAX_LOOKED_AT = 2 * 64 + 2
# C0 and C1 controls and the bidirectional overrides: they would rewrite a terminal or reorder text a
# reviewer reads in kubectl's output.
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


@dataclass(frozen=True)
class Subject:
    """What the operator asked the checker to judge: the request's uid, the snapshot compared against, and
    the quarantined files as (path, digest) in the requested order."""

    request: str
    snapshot: str
    files: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class JudgedResult:
    """The checks as the status records them when the result counts (``problem`` empty), else why not."""

    checks: tuple[dict[str, Any], ...] = ()
    problem: str = ""


def build_result(subject: Subject, results: Sequence[CheckResult]) -> dict[str, Any]:
    """The document the checker writes: the subject it was given and each check's result."""
    return {
        "kind": RESULT_KIND,
        "request": subject.request,
        "snapshot": subject.snapshot,
        "files": [{"path": path, "digest": digest} for path, digest in subject.files],
        "checks": [r.to_json() for r in results],
    }


def judge_result(raw: bytes, subject: Subject) -> JudgedResult:
    """The checks the result reports, when it is a whole result of ``subject``; else the problem."""
    if len(raw) > MAX_RESULT_BYTES:
        return JudgedResult(problem=f"the checker's result is larger than {MAX_RESULT_BYTES} bytes")
    try:
        document = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return JudgedResult(problem="the checker's result is not JSON (cut short or corrupted)")
    problem = _subject_problem(document, subject)
    if problem:
        return JudgedResult(problem=f"the checker's result {problem}")
    checks = document.get("checks")
    if not isinstance(checks, list) or [
        c.get("name") if isinstance(c, dict) else None for c in checks
    ] != list(CHECKS):
        return JudgedResult(
            problem=f"the checker's result does not hold exactly the checks {', '.join(CHECKS)}"
        )
    judged = []
    for check in checks:
        entry, problem = _judge_check(check, subject)
        if problem:
            return JudgedResult(problem=f"the checker's result of {check['name']} {problem}")
        judged.append(entry)
    return JudgedResult(tuple(judged))


def _subject_problem(document: Any, subject: Subject) -> str:
    if not isinstance(document, dict) or document.get("kind") != RESULT_KIND:
        return "is not a document the checker writes"
    if document.get("request") != subject.request:
        return "is of another request"
    if document.get("snapshot") != subject.snapshot:
        return "was checked against another snapshot"
    files = document.get("files")
    named = (
        [(f.get("path"), f.get("digest")) if isinstance(f, dict) else None for f in files]
        if isinstance(files, list)
        else None
    )
    if named != list(subject.files):
        return "names other files than the quarantined ones"
    return ""


def _judge_check(check: Mapping[str, Any], subject: Subject) -> tuple[dict[str, Any], str]:
    passed, looked_at, findings = check.get("passed"), check.get("lookedAt"), check.get("findings")
    if not isinstance(passed, bool):
        return {}, "has no verdict"
    if not isinstance(looked_at, list) or not _strings(looked_at) or not isinstance(findings, list):
        return {}, "does not say what it looked at and found"
    if not all(isinstance(f, dict) and _strings([f.get("file"), f.get("detail")]) for f in findings):
        return {}, "has a finding that is not a file and a detail"
    if passed != (not findings):
        return {}, "says passed with findings, or failed with none"
    paths = {path for path, _ in subject.files}
    if any(f["file"] not in paths and f["file"] != "" for f in findings):
        return {}, "has a finding about a file that was not exported"
    unseen = [p for p in sorted(paths) if not any(line.startswith(p) for line in looked_at)]
    if unseen:
        return {}, f"does not say it looked at {', '.join(unseen)[:MAX_TEXT]}"
    if len(looked_at) > MAX_LOOKED_AT:
        return {}, f"lists more than {MAX_LOOKED_AT} things it looked at"
    kept = [{"file": clean(f["file"]), "detail": clean(f["detail"])} for f in findings[:MAX_FINDINGS]]
    if len(findings) > MAX_FINDINGS:
        kept.append({"file": "", "detail": f"and {len(findings) - MAX_FINDINGS} more findings"})
    return {
        "name": check["name"],
        "passed": passed,
        "lookedAt": [clean(line) for line in looked_at],
        "findings": kept,
    }, ""


def _strings(values: Any) -> bool:
    return isinstance(values, list) and all(isinstance(v, str) for v in values)


def clean(text: str) -> str:
    """``text`` safe to show: control and bidirectional characters replaced, at most ``MAX_TEXT`` long."""
    cut = text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"
    return _UNPRINTABLE.sub("\ufffd", cut)


def checker_stopped(job: Mapping[str, Any] | None, terminations: Sequence[Mapping[str, Any]]) -> str:
    """Why the check Job failed, or "" while it has not: first what Kubernetes says (the Job controller's
    reason, the kubelet's for the container's end, e.g. OOMKilled), then the checker's last words, cleaned
    and marked as its own (a taken-over checker chooses them)."""
    conditions = ((job or {}).get("status") or {}).get("conditions") or ()
    failed = next((c for c in conditions if c.get("type") == "Failed" and c.get("status") == "True"), None)
    if failed is None:
        return ""
    reason = str(failed.get("reason") or "")
    parts = [_JOB_REASONS.get(reason, f"the check Job failed ({reason or 'no reason given'})")]
    for end in terminations[:1]:
        if end.get("reason") == "OOMKilled":
            parts.append("the checker ran out of memory and was killed (OOMKilled)")
        elif end.get("exitCode") not in (None, 0):
            parts.append(f"the checker exited with status {end.get('exitCode')}")
        words = str(end.get("message") or "").strip().splitlines()
        if words:
            parts.append(f"its last words: {clean(words[-1])[:300]}")
    return "; ".join(parts)


_JOB_REASONS = {
    "DeadlineExceeded": "the check Job ran past its deadline and was stopped",
    "BackoffLimitExceeded": "every try of the check Job failed",
    "PodFailurePolicy": "the checker failed",
}
