"""The clients layer: I/O with no product meaning (the Kubernetes client, the S3 client, TLS settings).

Below the cores and the edges, above `api` only (pyproject.toml's import contract holds this). Each module is
its own surface and this package imports none of them, so a user of one does not load another's library:
the ingest's workers need minio, never kubernetes.
"""
