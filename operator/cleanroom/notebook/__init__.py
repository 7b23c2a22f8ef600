"""The single-user server extension shipped in the notebook image: refuses downloads and audits the session.

Enable it with the configuration in `jupyter_config/` (the image copies it to /etc/jupyter):
`ServerApp.jpserver_extensions` loads it and `ServerApp.contents_manager_class` puts the guarded
contents manager in place."""

from typing import Any


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    from cleanroom.notebook.extension import DownloadGuard

    return [{"module": "cleanroom.notebook.extension", "app": DownloadGuard}]
