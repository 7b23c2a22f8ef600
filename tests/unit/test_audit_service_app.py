"""The audit service in-process (aiohttp's test server): what a modeller can put in a CSV cell, whose clock
dates a record, the session cookie, receipts, and a page that shows only what the chain holds."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from cleanroom.audit import read_records, write_signing_key
from cleanroom.auditweb.service import COOKIE, AuditService, ServiceConfig
from cleanroom.tokens import DevIssuer, write_dev_issuer

OPERATOR = "system:serviceaccount:cleanroom-system:cleanroom-operator"
WRITER_ISSUER, USER_ISSUER = "https://kubernetes.test", "https://login.test"


class Setup:
    def __init__(self, tmp_path: Path) -> None:
        self.writers: DevIssuer = write_dev_issuer(tmp_path / "writers", WRITER_ISSUER, "cleanroom-audit")
        self.users: DevIssuer = write_dev_issuer(tmp_path / "users", USER_ISSUER, "cleanroom-audit")
        write_signing_key(tmp_path / "signing.pem")
        self.directory = tmp_path / "trail"
        self.config = ServiceConfig(
            directory=self.directory,
            signing_key=tmp_path / "signing.pem",
            writer_issuer=WRITER_ISSUER,
            writer_jwks=str(tmp_path / "writers" / "dev-jwks.json"),
            writers=frozenset({OPERATOR}),
            user_issuer=USER_ISSUER,
            user_jwks=str(tmp_path / "users" / "dev-jwks.json"),
            user_audience="cleanroom-audit",
        )

    def writer(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.writers.issue(OPERATOR)}"}

    def officer(self) -> dict[str, str]:
        return {"Cookie": f"{COOKIE}={self.users.issue('sam@hospital.example', ('security-officer',))}"}

    def run(self, scenario: Callable[[TestClient[Any, Any]], Awaitable[None]]) -> None:
        async def main() -> None:
            async with TestClient(TestServer(AuditService(self.config).app())) as client:
                await scenario(client)

        asyncio.run(main())


def event(reason: str = "", time: str = "2026-11-02T10:00:00.000000Z", **resources: str) -> dict[str, Any]:
    return {
        "schema": "cleanroom.dev/audit/v1",
        "id": f"e-{abs(hash((reason, time, tuple(resources.items()))))}",
        "time": time,
        "actor": {"kind": "user", "name": "alice@hospital.example"},
        "action": "download.refused",
        "outcome": "denied",
        "resources": resources or {"workspace": "w1", "path": "notes.ipynb"},
        "reason": reason,
        "purpose": "",
        "requestId": "",
    }


FORMULAS = ['=HYPERLINK("http://evil.example","x")', "+1+1", "-2+3", "@SUM(A1)", "\tTAB", "\rCR"]


def test_csv_export_neutralises_cells_that_a_spreadsheet_would_run(tmp_path: Path) -> None:
    setup = Setup(tmp_path)

    async def scenario(client: TestClient[Any, Any]) -> None:
        body = {"events": [event(reason) for reason in FORMULAS]}
        assert (await client.post("/api/v1/events", json=body, headers=setup.writer())).status == 201
        response = await client.get("/export.csv", headers=setup.officer())
        assert response.status == 200
        rows = list(csv.reader(io.StringIO(await response.text())))
        reasons = [row[rows[0].index("reason")] for row in rows[1:]]
        assert sorted(reasons) == sorted("'" + formula for formula in FORMULAS)
        for row in rows[1:]:
            assert not any(cell[:1] in ("=", "+", "-", "@", "\t", "\r") for cell in row), row

    setup.run(scenario)


def test_the_service_stamps_its_own_receive_time_beside_the_writers_claim(tmp_path: Path) -> None:
    setup = Setup(tmp_path)

    async def scenario(client: TestClient[Any, Any]) -> None:
        backdated = event("backdated", time="2001-01-01T00:00:00.000000Z")
        assert (
            await client.post("/api/v1/events", json={"events": [backdated]}, headers=setup.writer())
        ).status == 201

    setup.run(scenario)
    [record] = read_records(setup.directory)
    assert record["event"]["time"] == "2001-01-01T00:00:00.000000Z"  # the writer's claim, kept as sent
    assert record["received"] > "2026-01-01T00:00:00"  # the service's clock, in the hashed record


def test_the_session_cookie_is_secure_httponly_and_strict(tmp_path: Path) -> None:
    setup = Setup(tmp_path)

    async def scenario(client: TestClient[Any, Any]) -> None:
        token = setup.users.issue("sam@hospital.example", ("security-officer",))
        response = await client.post("/login", data={"token": token}, allow_redirects=False)
        assert response.status == 302
        cookie = response.headers["Set-Cookie"].lower()
        assert "secure" in cookie and "httponly" in cookie and "samesite=strict" in cookie

    setup.run(scenario)


def test_the_page_never_shows_a_row_the_chain_does_not_hold(tmp_path: Path) -> None:
    """Whoever can write the service's volume edits the SQLite index: a row added that names mallory and
    points at alice's record, alice's row re-labelled. The page and the CSV show the chain's records only."""
    setup = Setup(tmp_path)

    async def scenario(client: TestClient[Any, Any]) -> None:
        body = {"events": [event("genuine", dataset="lung-ct", workspace="w1")]}
        assert (await client.post("/api/v1/events", json=body, headers=setup.writer())).status == 201
        assert "genuine" in await (await client.get("/", headers=setup.officer())).text()
        db = sqlite3.connect(setup.directory / "index.sqlite")
        with db:
            row = db.execute("SELECT time, at, length, hash FROM records WHERE seq = 1").fetchone()
            db.execute(
                "INSERT INTO records VALUES (2, ?, 'mallory@hospital.example', 'data.file.opened', 'lung-ct',"
                " 'w1', ?, ?, ?)",
                row,
            )
        db.close()
        mallory = {"actor": "mallory@hospital.example"}
        page = await (await client.get("/", params=mallory, headers=setup.officer())).text()
        exported = await (await client.get("/export.csv", params=mallory, headers=setup.officer())).text()
        assert "genuine" not in page and '<span id="count">0</span>' in page
        assert exported.strip().splitlines()[1:] == []
        everything = await (await client.get("/", headers=setup.officer())).text()
        assert everything.count("<tr class='event") == 1

    setup.run(scenario)


def test_receipts_verify_against_the_trail_and_verify_uses_only_configured_keys(tmp_path: Path) -> None:
    from cleanroom.audit import Anchors, key_fingerprint, verify_directory, write_trusted_keys

    setup = Setup(tmp_path)
    receipts: list[str] = []

    async def scenario(client: TestClient[Any, Any]) -> None:
        for reason in ("one", "two"):
            response = await client.post(
                "/api/v1/events", json={"events": [event(reason)]}, headers=setup.writer()
            )
            receipts.append((await response.json())["receipt"])
        unconfigured = await client.post("/verify", headers=setup.officer())
        assert (
            unconfigured.status == 409
            and "no trusted key fingerprints configured" in await unconfigured.text()
        )

    setup.run(scenario)
    fingerprint = key_fingerprint(setup.config.signing_key)
    anchors = Anchors(frozenset({fingerprint}), "test")
    assert verify_directory(setup.directory, anchors, receipts=receipts).problem is None
    write_trusted_keys(tmp_path / "trusted-keys", [fingerprint])
    import dataclasses

    setup.config = dataclasses.replace(setup.config, trusted_keys=str(tmp_path / "trusted-keys"))

    async def configured_scenario(client: TestClient[Any, Any]) -> None:
        ok = await client.post("/verify", headers=setup.officer())
        assert ok.status == 200 and "every link and checkpoint signature holds" in await ok.text()

    setup.run(configured_scenario)


def test_a_new_service_with_an_age_limit_verifies_in_its_first_minute(tmp_path: Path) -> None:
    """The service seals at start: with a checkpoint age limit (as the chart sets), an officer's Verify of a
    trail only seconds old passes instead of reporting that nothing seals it."""
    import dataclasses

    from cleanroom.audit import key_fingerprint, write_trusted_keys

    setup = Setup(tmp_path)
    write_trusted_keys(tmp_path / "trusted-keys", [key_fingerprint(setup.config.signing_key)])
    setup.config = dataclasses.replace(
        setup.config, trusted_keys=str(tmp_path / "trusted-keys"), max_checkpoint_age=300
    )

    async def scenario(client: TestClient[Any, Any]) -> None:
        await client.post("/api/v1/events", json={"events": [event("one")]}, headers=setup.writer())
        ok = await client.post("/verify", headers=setup.officer())
        assert ok.status == 200, await ok.text()

    setup.run(scenario)


def test_the_cli_csv_output_is_neutralised_too(tmp_path: Path) -> None:
    import subprocess
    import sys

    from cleanroom.audit import Actor, AuditEvent, AuditLog
    from cleanroom.audit.spool import load_signing_key

    write_signing_key(tmp_path / "key.pem")
    log = AuditLog(tmp_path / "trail", load_signing_key(tmp_path / "key.pem"))
    log.append([AuditEvent("download.refused", Actor("user", "alice"), reason=f) for f in FORMULAS])
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "cleanroom.cli",
            "audit",
            "query",
            "--dir",
            str(tmp_path / "trail"),
            "-o",
            "csv",
        ],
        capture_output=True,
        timeout=60,
    )
    rows = list(csv.reader(io.StringIO(result.stdout.decode(), newline="")))
    assert sorted(row[rows[0].index("reason")] for row in rows[1:]) == sorted("'" + f for f in FORMULAS)


def test_a_refused_token_and_an_officers_sign_in_are_recorded_without_the_token(tmp_path: Path) -> None:
    setup = Setup(tmp_path)
    forged = write_dev_issuer(tmp_path / "forger", USER_ISSUER, "cleanroom-audit").issue(
        "sam@hospital.example", ("security-officer",)
    )
    genuine = setup.users.issue("sam@hospital.example", ("security-officer",))

    async def scenario(client: TestClient[Any, Any]) -> None:
        assert (await client.post("/login", data={"token": forged}, allow_redirects=False)).status == 401
        assert (await client.post("/login", data={"token": genuine}, allow_redirects=False)).status == 302

    setup.run(scenario)
    logins = [r for r in read_records(setup.directory) if r["event"]["action"] == "officer.login"]
    assert [(r["event"]["actor"]["name"], r["event"]["outcome"]) for r in logins] == [
        ("unauthenticated", "denied"),
        ("sam@hospital.example", "success"),
    ]
    assert logins[0]["event"]["reason"].startswith("token: ")
    assert not any(forged in json.dumps(r) or genuine in json.dumps(r) for r in logins)


def test_the_trail_stays_searchable_and_verifiable_when_its_index_cannot_be_opened(tmp_path: Path) -> None:
    """Seen on a long-lived install: SQLite answered "disk I/O error" and the officers' page answered 500.
    The index is a convenience: the page, the CSV and Verify answer from the chain and say the index is unusable."""
    import dataclasses

    from cleanroom.audit import key_fingerprint, write_trusted_keys

    setup = Setup(tmp_path)
    write_trusted_keys(tmp_path / "trusted-keys", [key_fingerprint(setup.config.signing_key)])
    setup.config = dataclasses.replace(setup.config, trusted_keys=str(tmp_path / "trusted-keys"))

    async def scenario(client: TestClient[Any, Any]) -> None:
        body = {"events": [event("first", dataset="lung-ct"), event("second", dataset="brain-mr")]}
        assert (await client.post("/api/v1/events", json=body, headers=setup.writer())).status == 201
        index = setup.directory / "index.sqlite"
        if index.exists():
            index.unlink()
        index.mkdir()  # what SQLite cannot open, whatever the reason
        page = await client.get("/", params={"dataset": "lung-ct"}, headers=setup.officer())
        text = await page.text()
        assert page.status == 200, text
        assert "first" in text and "second" not in text and '<span id="count">1</span>' in text
        exported = await (await client.get("/export.csv", headers=setup.officer())).text()
        assert len(exported.strip().splitlines()) == 1 + len(read_records(setup.directory))
        verified = await client.post("/verify", headers=setup.officer())
        shown = await verified.text()
        assert verified.status == 200 and "every link and checkpoint signature holds" in shown, shown
        assert "index-unusable" in shown, shown

    setup.run(scenario)
