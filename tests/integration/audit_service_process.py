"""`cleanroom audit serve` as a real process: writers authenticate with real service-account tokens from the
local kube-apiserver (TokenRequest, audience cleanroom-audit), verified against the API server's own JWKS. It
serves TLS (a certificate of its own for 127.0.0.1, `ca`), as the chart's does, and its Verify trusts the
signing key's fingerprint from a file outside the trail (`trusted_keys`), as the chart's ConfigMap does."""

from __future__ import annotations

import datetime
import ipaddress
import json
import ssl
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from cleanroom.audit import key_fingerprint, write_signing_key, write_trusted_keys
from cleanroom.tokens import DevIssuer, write_dev_issuer
from tests.integration.conftest import Kubectl, free_port

USER_ISSUER, USER_AUDIENCE = "https://login.cleanroom.test", "cleanroom-audit-page"


def write_localhost_certificate(cert: Path, key: Path) -> None:
    """A self-signed certificate for 127.0.0.1: the client trusts exactly this certificate."""
    private = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cleanroom-audit-test")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        # What strict X.509 checking (urllib3, Python >= 3.13) requires of a certificate that is its own CA.
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(private.public_key()), False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(private.public_key()), False)
        .add_extension(x509.KeyUsage(True, False, False, False, False, True, False, False, False), True)
        .sign(private, hashes.SHA256())
    )
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )


class AuditService:
    def __init__(
        self, kubectl: Kubectl, kubeconfig: str, workdir: Path, extra_env: dict[str, str] | None = None
    ) -> None:
        self.kubectl = kubectl
        self.workdir = workdir
        self.directory = workdir / "trail"
        self.namespace = f"audit-{uuid.uuid4().hex[:6]}"
        kubectl.run("create", "namespace", self.namespace)
        for account in ("cleanroom-operator", "someone-else"):
            kubectl.run("create", "serviceaccount", account, "-n", self.namespace)
        (workdir / "writer-jwks.json").write_text(kubectl.run("get", "--raw", "/openid/v1/jwks").stdout)
        issuer = json.loads(kubectl.run("get", "--raw", "/.well-known/openid-configuration").stdout)["issuer"]
        self.users: DevIssuer = write_dev_issuer(workdir / "users", USER_ISSUER, USER_AUDIENCE)
        write_signing_key(workdir / "signing.pem")
        self.trusted_keys = workdir / "trusted-keys"
        write_trusted_keys(self.trusted_keys, [key_fingerprint(workdir / "signing.pem")])
        self.ca = str(workdir / "tls.crt")
        write_localhost_certificate(workdir / "tls.crt", workdir / "tls.key")
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        env = {
            "PATH": "/usr/bin:/bin",
            "CLEANROOM_AUDIT_DIR": str(self.directory),
            "CLEANROOM_AUDIT_SIGNING_KEY": str(workdir / "signing.pem"),
            "CLEANROOM_AUDIT_WRITER_ISSUER": issuer,
            "CLEANROOM_AUDIT_WRITER_JWKS": str(workdir / "writer-jwks.json"),
            "CLEANROOM_AUDIT_WRITERS": f"system:serviceaccount:{self.namespace}:cleanroom-operator",
            "CLEANROOM_AUDIT_USER_ISSUER": USER_ISSUER,
            "CLEANROOM_AUDIT_USER_JWKS": str(workdir / "users" / "dev-jwks.json"),
            "CLEANROOM_AUDIT_USER_AUDIENCE": USER_AUDIENCE,
            "CLEANROOM_AUDIT_TRUSTED_KEYS": str(self.trusted_keys),
            "CLEANROOM_AUDIT_MAX_CHECKPOINT_AGE": "300",
            **(extra_env or {}),
        }
        self.log_path = workdir / "audit-service.log"
        self.log = self.log_path.open("w")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cleanroom.cli",
                "audit",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--tls-cert",
                str(workdir / "tls.crt"),
                "--tls-key",
                str(workdir / "tls.key"),
            ],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"audit service exited:\n{self.log_path.read_text()}")
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=2, context=self.tls()):
                    return
            except OSError:
                time.sleep(0.2)
        raise AssertionError(f"audit service not up:\n{self.log_path.read_text()}")

    def tls(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.ca)

    def writer_token(self, account: str = "cleanroom-operator", audience: str = "cleanroom-audit") -> str:
        return self.kubectl.run(
            "create", "token", account, "-n", self.namespace, "--audience", audience, "--duration", "10m"
        ).stdout.strip()

    def user_token(self, user: str, groups: tuple[str, ...] = ()) -> str:
        return self.users.issue(user, groups)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)
        self.log.close()
        self.kubectl.run("delete", "namespace", self.namespace, "--wait=false", check=False)


def event(action: str = "workspace.started", **resources: str) -> dict[str, Any]:
    return {
        "schema": "cleanroom.dev/audit/v1",
        "id": str(uuid.uuid4()),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime()),
        "actor": {"kind": "service", "name": "system:serviceaccount:cleanroom-system:cleanroom-operator"},
        "action": action,
        "outcome": "success",
        "resources": resources or {"dataset": "prostate-mri", "workspace": "seg", "namespace": "team-a"},
        "reason": "",
        "purpose": "",
        "requestId": "",
    }


@pytest.fixture(scope="module")
def audit_service(
    kubectl: Kubectl, kubeconfig: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AuditService]:
    service = AuditService(kubectl, kubeconfig, tmp_path_factory.mktemp("audit-service"))
    yield service
    service.stop()
