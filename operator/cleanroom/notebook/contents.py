"""The contents manager: the file browser's API, with file content withheld where `guard` says so.

Only text leaves through it: a file is checked whole before it is read, and the model about to be sent
is checked again (the kernel may swap the file in between); base64 content is never sent, whatever the
request asks for. docs/threat-model.md says why no base64 read is allowed at all."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from jupyter_server.services.contents.largefilemanager import AsyncLargeFileManager
from tornado import web

from cleanroom.notebook import audit_client
from cleanroom.notebook.guard import BINARY_REFUSED, refused_copy, refused_model, refused_read


class GuardedContentsManager(AsyncLargeFileManager):
    def _data_dir(self) -> str:
        return os.environ.get("CLEANROOM_DATA", "/data")

    def _refuse(self, path: str, reason: str) -> web.HTTPError:
        audit_client.send("download.refused", path.strip("/"), reason, outcome="denied")
        return web.HTTPError(403, reason)

    async def get(
        self, path: Any, content: Any = True, type: Any = None, format: Any = None, require_hash: Any = False
    ) -> Any:
        os_path = self._get_os_path(path.strip("/"))
        if content and os.path.isfile(os_path):
            reason = await asyncio.to_thread(refused_read, os_path, self._data_dir())
            if reason is None and format == "base64":
                reason = BINARY_REFUSED
            if reason:
                raise self._refuse(path, reason)
        model = await super().get(path, content=content, type=type, format=format, require_hash=require_hash)
        if content and model.get("type") != "directory":
            reason = refused_model(model)
            if reason:
                raise self._refuse(path, reason)
        return model

    async def copy(self, from_path: str, to_path: str | None = None) -> Any:
        reason = refused_copy(self._get_os_path(from_path.strip("/")), self._data_dir())
        if reason:
            raise self._refuse(from_path, reason)
        return await super().copy(from_path, to_path)
