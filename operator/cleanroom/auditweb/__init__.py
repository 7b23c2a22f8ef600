"""The audit service, an edge over the audit core: the writers' intake (`POST /api/v1/events`, the API
server's audit webhook), the security officers' page and JSON API, and its Prometheus metrics. It alone
of the audit code runs a web server (aiohttp) and a metrics endpoint; `cleanroom audit serve` starts it."""

from cleanroom.auditweb.metrics import ServiceMetrics
from cleanroom.auditweb.service import AuditService, ServiceConfig, serve

__all__ = ["AuditService", "ServiceConfig", "ServiceMetrics", "serve"]
