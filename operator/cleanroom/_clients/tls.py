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


def https_opener(ca_bundle: str = "", *, only_ca: str = "") -> urllib.request.OpenerDirector:
    """A urllib opener whose HTTPS connections use `client_context`; with ``only_ca`` (PEM text, such as
    the chart's CA of the grant signer) they trust that CA and nothing else."""
    context = ssl.create_default_context(cadata=only_ca) if only_ca.strip() else client_context(ca_bundle)
    return urllib.request.build_opener(urllib.request.HTTPSHandler(context=context))


def server_context(certificate: str, key: str) -> ssl.SSLContext:
    """A server's TLS (1.2 at least) with the certificate chain and key in these files."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(certificate, key)
    return context
