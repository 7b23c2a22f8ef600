"""The contents manager: the file browser's API, with file content withheld where `guard` says so."""

from __future__ import annotations

import os
from typing import Any

from jupyter_server.services.contents.largefilemanager import AsyncLargeFileManager
from tornado import web

from cleanroom.notebook import audit_client
from cleanroom.notebook.guard import refused_copy, refused_read


class GuardedContentsManager(AsyncLargeFileManager):
    def _data_dir(self) -> str:
        return os.environ.get("CLEANROOM_DATA", "/data")

    async def get(
        self, path: Any, content: Any = True, type: Any = None, format: Any = None, require_hash: Any = False
    ) -> Any:
        os_path = self._get_os_path(path.strip("/"))
        if os.path.isfile(os_path):
            data_dir = self._data_dir()
            if content:
                with open(os_path, "rb") as handle:
                    reason = refused_read(os_path, data_dir, handle.read(8192))
                if reason:
                    audit_client.send("download.refused", path, reason, outcome="denied")
                    raise web.HTTPError(403, reason)
        return await super().get(path, content=content, type=type, format=format, require_hash=require_hash)

    async def copy(self, from_path: str, to_path: str | None = None) -> Any:
        reason = refused_copy(self._get_os_path(from_path.strip("/")), self._data_dir())
        if reason:
            audit_client.send("download.refused", from_path, reason, outcome="denied")
            raise web.HTTPError(403, reason)
        return await super().copy(from_path, to_path)
