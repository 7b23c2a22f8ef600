"""What a modeller's browser does with a running single-user server, through the hub's proxy: REST calls
with the server's XSRF cookie, and code run in a kernel over the kernel's websocket (the Jupyter
messaging protocol, as JupyterLab speaks it)."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any
from urllib.parse import urlsplit

import requests
from tornado.httpclient import HTTPRequest
from tornado.websocket import WebSocketClosedError, websocket_connect


class KernelError(AssertionError):
    """The code raised in the kernel; the message carries the traceback."""


class Lab:
    def __init__(self, session: requests.Session, base: str) -> None:
        self.session, self.base = session, base.rstrip("/")
        self._kernel: str | None = None

    def _cookies_for(self, url: str) -> str:
        path = urlsplit(url).path
        return "; ".join(
            f"{c.name}={c.value}" for c in self.session.cookies if path.startswith(c.path or "/")
        )

    @property
    def xsrf(self) -> dict[str, str]:
        # This server's own cookie: a browser signed in to two servers holds one per server, each on its path.
        path = urlsplit(self.base).path.rstrip("/") + "/"
        token = next(
            (
                c.value
                for c in sorted(self.session.cookies, key=lambda c: -len(c.path or ""))
                if c.name == "_xsrf"
                and c.path.startswith("/user")
                and path.startswith(c.path.rstrip("/") + "/")
            ),
            "",
        )
        return {"X-XSRFToken": token or ""}

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.session.get(f"{self.base}/{path.lstrip('/')}", allow_redirects=False, **kwargs)

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        return self.session.post(f"{self.base}/{path.lstrip('/')}", headers=self.xsrf, **kwargs)

    def kernel(self) -> str:
        if self._kernel is None:
            response = self.post("api/kernels", json={"name": "python3"})
            assert response.status_code == 201, (response.status_code, response.text[:500])
            self._kernel = str(response.json()["id"])
        return self._kernel

    def run(self, code: str, timeout: float = 60) -> str:
        """Run `code` in this session's kernel; its stdout. Raises KernelError if the code raised."""
        return asyncio.run(self._run(code, timeout))

    async def _run(self, code: str, timeout: float) -> str:
        url = f"{self.base}/api/kernels/{self.kernel()}/channels".replace("http", "ws", 1)
        request = HTTPRequest(url, headers={"Cookie": self._cookies_for(url)}, request_timeout=timeout)
        socket = await websocket_connect(request)
        message_id = uuid.uuid4().hex
        socket.write_message(
            json.dumps(
                {
                    "header": {
                        "msg_id": message_id,
                        "msg_type": "execute_request",
                        "username": "test",
                        "session": uuid.uuid4().hex,
                        "version": "5.3",
                        "date": "",
                    },
                    "parent_header": {},
                    "metadata": {},
                    "content": {"code": code, "silent": False, "store_history": False},
                    "channel": "shell",
                    "buffers": [],
                }
            )
        )
        out: list[str] = []
        try:
            while True:
                raw = await asyncio.wait_for(socket.read_message(), timeout)
                if raw is None:
                    raise WebSocketClosedError(f"kernel websocket closed: {socket.close_reason}")
                message = json.loads(raw)
                if message.get("parent_header", {}).get("msg_id") != message_id:
                    continue
                kind, content = message["msg_type"], message["content"]
                if kind == "stream":
                    out.append(content["text"])
                elif kind == "error":
                    raise KernelError("\n".join(content.get("traceback", [])) or content.get("evalue"))
                elif kind == "status" and content.get("execution_state") == "idle":
                    return "".join(out)
        finally:
            socket.close()
