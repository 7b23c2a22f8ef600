"""The reconcile engine without a cluster: the per-key work queue (merging, one pass per key at a time,
requeue-after, retry of a failed pass), apply tracking, namespace guards, event facts and read grants."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from cleanroom.handlers._engine import Again, WorkQueue, seconds_until
from cleanroom.handlers._grants import GrantCache
from cleanroom.handlers._tracking import AppliedObjects, LastSeen, NamespaceGuards
from cleanroom.snapshots.grant import Grant

WAIT = 5.0


class FakeClock:
    """Holds each key's timed action until the test fires it."""

    def __init__(self) -> None:
        self.due: dict[Hashable, tuple[float, Callable[[], None]]] = {}

    def schedule(self, key: Hashable, when: float, action: Callable[[], None]) -> None:
        self.due[key] = (when, action)

    def cancel(self, key: Hashable) -> None:
        self.due.pop(key, None)

    def fire(self, key: Hashable) -> None:
        _, action = self.due.pop(key)
        action()


class Now:
    def __init__(self, value: float = 100.0) -> None:
        self.value = value

    def __call__(self) -> float:
        return self.value


def queue_of(work: Callable[[str, Any], Any], clock: FakeClock | None = None) -> WorkQueue[str, Any]:
    return WorkQueue(work, clock or FakeClock(), retry_seconds=5.0, monotonic=Now())


def in_thread(action: Callable[[], None]) -> threading.Thread:
    thread = threading.Thread(target=action, daemon=True)
    thread.start()
    return thread


def test_requests_arriving_during_a_pass_are_merged_into_one_more_pass_with_the_newest() -> None:
    passes: list[str] = []
    started, release = threading.Event(), threading.Event()

    def work(key: str, request: str) -> None:
        passes.append(request)
        if request == "first":
            started.set()
            assert release.wait(WAIT)

    queue = queue_of(work)
    runner = in_thread(lambda: queue.add("ns/ws", "first"))
    assert started.wait(WAIT)
    # Each returns at once: the request is left for the running pass, not waited on a thread.
    for request in ("second", "third", "newest"):
        adder = in_thread(lambda r=request: queue.add("ns/ws", r))  # type: ignore[misc]
        adder.join(WAIT)
        assert not adder.is_alive()
    assert passes == ["first"]
    release.set()
    runner.join(WAIT)
    assert passes == ["first", "newest"]
    assert not queue.running("ns/ws")


def test_a_key_is_judged_by_one_pass_at_a_time_and_other_keys_do_not_wait() -> None:
    active: dict[str, int] = {"a": 0, "b": 0}
    most: dict[str, int] = {"a": 0, "b": 0}
    lock = threading.Lock()
    a_blocked, release_a = threading.Event(), threading.Event()
    b_done = threading.Event()

    def work(key: str, request: int) -> None:
        with lock:
            active[key] += 1
            most[key] = max(most[key], active[key])
        if key == "a" and request == -1:
            a_blocked.set()
            assert release_a.wait(WAIT)
        time.sleep(0.001)
        with lock:
            active[key] -= 1
        if key == "b":
            b_done.set()

    queue = queue_of(work)
    blocked = in_thread(lambda: queue.add("a", -1))
    assert a_blocked.wait(WAIT)
    # "b" runs while "a" is held up.
    in_thread(lambda: queue.add("b", 0))
    assert b_done.wait(WAIT)
    release_a.set()
    blocked.join(WAIT)
    threads = [in_thread(lambda i=i: [queue.add("a", n) for n in range(i, i + 30)]) for i in range(8)]  # type: ignore[misc]
    for thread in threads:
        thread.join(WAIT * 4)
    assert most == {"a": 1, "b": 1}
    assert not queue.running("a")


def test_a_pass_says_when_to_judge_the_key_again_and_a_gone_key_is_forgotten() -> None:
    clock = FakeClock()
    seen: list[str] = []
    answers: list[Again[str] | None] = [Again(30.0, lambda: "tick"), Again(60.0, lambda: "tick"), None]

    def work(key: str, request: str) -> Again[str] | None:
        seen.append(request)
        return answers.pop(0)

    queue = queue_of(work, clock)
    queue.add("ns/ws", "event")
    assert clock.due["ns/ws"][0] == 130.0  # now (100) + 30
    clock.fire("ns/ws")
    assert seen == ["event", "tick"] and clock.due["ns/ws"][0] == 160.0
    queue.add("ns/ws", "deleted")  # the pass finds the Workspace gone: its timed pass goes too
    assert "ns/ws" not in clock.due


def test_a_new_deadline_replaces_the_one_before() -> None:
    clock = FakeClock()
    queue = queue_of(lambda key, request: Again(float(request), lambda: 0), clock)
    queue.add("k", 300)
    queue.add("k", 2)
    assert clock.due["k"][0] == 102.0


def test_a_failed_pass_reaches_the_caller_and_is_retried_soon_with_the_newest_request() -> None:
    clock = FakeClock()
    seen: list[str] = []
    failing, release = threading.Event(), threading.Event()

    def work(key: str, request: str) -> Again[str]:
        seen.append(request)
        if request == "breaks":
            failing.set()
            assert release.wait(WAIT)
            raise RuntimeError("the API server is unreachable")
        return Again(300.0, lambda: "tick")

    queue = queue_of(work, clock)
    errors: list[BaseException] = []

    def add() -> None:
        try:
            queue.add("k", "breaks")
        except RuntimeError as error:
            errors.append(error)

    runner = in_thread(add)
    assert failing.wait(WAIT)
    queue.add("k", "arrived meanwhile")  # left for the running pass, which fails
    release.set()
    runner.join(WAIT)
    assert [str(e) for e in errors] == ["the API server is unreachable"]
    assert clock.due["k"][0] == 105.0  # retried after retry_seconds, not at the plan's deadline
    assert not queue.running("k")  # a failed pass leaves the key free
    clock.fire("k")
    assert seen == ["breaks", "arrived meanwhile"]
    assert clock.due["k"][0] == 400.0


def test_the_wait_until_a_plans_deadline() -> None:
    now = datetime(2026, 11, 1, tzinfo=UTC)
    assert seconds_until(None, now, 300.0) == 300.0
    assert seconds_until(now + timedelta(seconds=10), now, 300.0) == 10.5
    assert seconds_until(now - timedelta(seconds=10), now, 300.0) == 0.5
    assert seconds_until(now + timedelta(hours=2), now, 300.0) == 300.0


def policy(name: str, egress: list[Any]) -> dict[str, Any]:
    return {"kind": "NetworkPolicy", "metadata": {"name": name}, "spec": {"egress": egress}}


def test_an_object_is_applied_again_only_when_changed_forgotten_or_too_long_ago() -> None:
    now = Now()
    applied: AppliedObjects[str] = AppliedObjects(300.0, monotonic=now)
    deny = policy("ws-notebook", [])
    assert applied.due("ns/ws", deny)
    applied.record("ns/ws", deny)
    assert not applied.due("ns/ws", deny)
    assert applied.due("ns/ws", policy("ws-notebook", [{"to": []}]))  # changed
    assert applied.due("ns/other", deny)  # another owner's
    now.value += 301
    assert applied.due("ns/ws", deny)  # someone may have deleted it by hand
    applied.record("ns/ws", deny)
    applied.forget_object("ns/ws", "NetworkPolicy", "ws-notebook")
    assert applied.due("ns/ws", deny)
    applied.record("ns/ws", deny)
    applied.forget("ns/ws")
    assert applied.due("ns/ws", deny)


def test_a_namespace_is_guarded_once_per_interval_by_one_pass_while_the_others_wait() -> None:
    now = Now()
    guards = NamespaceGuards(300.0, monotonic=now)
    runs: list[str] = []

    def guard() -> None:
        time.sleep(0.05)
        runs.append("team")

    threads = [in_thread(lambda: guards.ensure("team", guard)) for _ in range(8)]
    for thread in threads:
        thread.join(WAIT)
    assert runs == ["team"]
    guards.forget("team")  # its default-deny policy was deleted
    guards.ensure("team", guard)
    assert len(runs) == 2
    now.value += 301
    guards.ensure("team", guard)
    assert len(runs) == 3

    def broken() -> None:
        raise RuntimeError("quota refused")

    now.value += 301
    with pytest.raises(RuntimeError):
        guards.ensure("team", broken)
    guards.ensure("team", guard)  # a guard that failed counts as not run
    assert len(runs) == 4


def test_only_a_change_of_an_objects_facts_is_worth_a_pass() -> None:
    seen: LastSeen[str, tuple[str, ...]] = LastSeen()
    assert seen.changed("ns/pod", ("Pending",))
    assert not seen.changed("ns/pod", ("Pending",))
    assert seen.changed("ns/pod", ("Running",))
    seen.forget("ns/pod")
    assert seen.changed("ns/pod", ("Running",))


def test_a_read_grant_is_issued_when_due_and_reused_until_half_its_life() -> None:
    grants: GrantCache[str] = GrantCache()
    start = datetime(2026, 11, 1, tzinfo=UTC)
    issued: list[tuple[str, datetime]] = []

    def issue(snapshot: str, now: datetime) -> Callable[[], Grant]:
        def make() -> Grant:
            issued.append((snapshot, now))
            return Grant(
                url=f"https://s3/{snapshot}/{len(issued)}",
                snapshot=snapshot,
                issued_at=now,
                expires_at=now + timedelta(hours=1),
            )

        return make

    assert grants.url("ns/ws", "", start, issue("", start)) == "" and issued == []  # no grant asked for
    first = grants.url("ns/ws", "sha256:a", start, issue("sha256:a", start))
    later = start + timedelta(minutes=20)
    assert grants.url("ns/ws", "sha256:a", later, issue("sha256:a", later)) == first
    assert len(issued) == 1
    half = start + timedelta(minutes=30)
    assert grants.url("ns/ws", "sha256:a", half, issue("sha256:a", half)) != first  # renewed
    assert grants.url("ns/ws", "sha256:b", half, issue("sha256:b", half)).startswith("https://s3/sha256:b/")
    grants.forget("ns/ws")
    grants.url("ns/ws", "sha256:b", half, issue("sha256:b", half))
    assert len(issued) == 4


def test_a_pass_refused_for_a_while_is_retried_when_its_error_says() -> None:
    """A pod the quota refuses (kopf.TemporaryError with a delay of 30 s) is asked for again in 30 s, not
    every 5 s (it was, for as long as the quota stayed full: a pass and a Warning each time)."""
    import kopf

    clock = FakeClock()

    def work(key: str, request: str) -> None:
        raise kopf.TemporaryError("exceeded quota", delay=30)

    with pytest.raises(kopf.TemporaryError):
        queue_of(work, clock).add("k", "start")
    assert clock.due["k"][0] == 130.0
