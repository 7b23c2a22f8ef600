"""TLS for cleanroom's HTTPS clients, in one place: certificates and host names are always verified.

A CA bundle (a hospital's PACS or store signed by its own CA, the chart's CA for the audit service) adds
trust; nothing here turns verification off, so no caller can.
"""

from __future__ import annotations

import ssl
import urllib.request


def client_context(ca_bundle: str = "") -> ssl.SSLContext:
    """The system's CAs, plus ``ca_bundle``'s when given; verification and host-name checks on."""
    return ssl.create_default_context(cafile=ca_bundle or None)


def https_opener(ca_bundle: str = "") -> urllib.request.OpenerDirector:
    """A urllib opener whose HTTPS connections use `client_context`."""
    return urllib.request.build_opener(urllib.request.HTTPSHandler(context=client_context(ca_bundle)))
