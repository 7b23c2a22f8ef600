"""A modeller's browser session with the deployed hub, through the chart's proxy: sign in with a bearer token
from the dev identity provider, start a Workspace's server as the Start button does, and open JupyterLab.

Also a command for `make dev` (hack/deployed-sample.sh):
    python -m tests.deployed.hub_session HUB_URL USER NAMESPACE/WORKSPACE
starts the Workspace through the hub and waits until JupyterLab answers 200 through the proxy.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import requests

from cleanroom.hub.names import server_name
from cleanroom.tokens import DevIssuer, load_dev_issuer

STATE = Path(__file__).resolve().parents[2] / ".cluster"
HUB_ISSUER, HUB_AUDIENCE = "https://login.cleanroom.local", "cleanroom-hub"


def dev_issuer() -> DevIssuer:
    """The dev identity provider whose JWKS the deployed hub trusts (hack/deploy.sh makes it)."""
    return load_dev_issuer(STATE / "hub" / "dev-issuer.pem", HUB_ISSUER, HUB_AUDIENCE)


@dataclass
class HubSession:
    base: str
    user: str
    session: requests.Session

    @classmethod
    def sign_in(
        cls, base: str, user: str, groups: tuple[str, ...] = (), issuer: DevIssuer | None = None
    ) -> HubSession:
        # The deployed hub names users by their verified address (hub.oidc.usernameClaim=email), as a
        # provider's token carries it; the dev issuer's subject alone names nobody there.
        token = (issuer or dev_issuer()).issue(user, groups, extra={"email": user, "email_verified": True})
        session = requests.Session()
        # A new connection per request: through kubectl port-forward a connection the proxy closed after its
        # keep-alive timeout (Node's 5 s) still looks open here, and the next request on it was answered
        # "Remote end closed connection without response" (the airlock test's page after a pause).
        session.headers["Connection"] = "close"
        response = session.get(f"{base}/hub/login", headers={"Authorization": f"Bearer {token}"}, timeout=30)
        if response.status_code != 200:
            raise AssertionError(
                f"sign-in as {user} answered {response.status_code}: {response.text[-1000:]}"
            )
        return cls(base.rstrip("/"), user, session)

    def xsrf(self) -> str:
        return next(
            c.value or "" for c in self.session.cookies if c.name == "_xsrf" and c.path.startswith("/hub")
        )

    def server_url(self, namespace: str, workspace: str) -> str:
        return f"{self.base}/user/{self.user}/{server_name(namespace, workspace)}"

    def start(self, namespace: str, workspace: str, timeout: float = 300) -> str:
        """Start the Workspace's server and wait until JupyterLab answers through the proxy; its URL."""
        server = server_name(namespace, workspace)
        response = self.session.get(f"{self.base}/hub/spawn/{self.user}/{server}", timeout=timeout)
        if response.status_code != 200:
            raise AssertionError(
                f"starting {namespace}/{workspace} answered {response.status_code}: {response.text[-1000:]}"
            )
        url = self.server_url(namespace, workspace)
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            lab = self.session.get(f"{url}/lab", timeout=30)
            if lab.status_code == 200 and "/lab" in lab.url:
                return url
            last = f"{lab.status_code} at {lab.url}"
            time.sleep(1)
        raise AssertionError(
            f"JupyterLab of {namespace}/{workspace} did not answer through the proxy: {last}"
        )

    def stop(self, namespace: str, workspace: str) -> requests.Response:
        server = server_name(namespace, workspace)
        return self.session.post(
            f"{self.base}/hub/workspaces/{server}/stop", data={"_xsrf": self.xsrf()}, timeout=120
        )


def main(argv: list[str]) -> int:
    if len(argv) != 3 or "/" not in argv[2]:
        print("usage: python -m tests.deployed.hub_session HUB_URL USER NAMESPACE/WORKSPACE", file=sys.stderr)
        return 2
    base, user, target = argv
    namespace, workspace = target.split("/", 1)
    session = HubSession.sign_in(base, user)
    # A session left from an earlier run is stopped through the hub first (the hub's own record of it goes
    # too), then started afresh; a start right after a stop may be refused while the stop completes.
    session.stop(namespace, workspace)
    for attempt in range(6):
        try:
            url = session.start(namespace, workspace)
            break
        except AssertionError:
            if attempt == 5:
                raise
            time.sleep(10)
    print(f"{url}/lab answers through the proxy", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
