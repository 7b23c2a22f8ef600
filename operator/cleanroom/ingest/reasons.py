"""The reasons an ingest gives for an entry that is not in the snapshot because of the run, not the file.

A module of plain names that imports nothing, so that the Dataset plan (`cleanroom.datasets`) can judge a run
by them and stay pure in the import contract's eyes: its imports lead to no storage client through here.
"""

# Reasons that are the run's, not the file's: any of them fails the run and nothing is published.
SOURCE_UNREACHABLE = "SourceUnreachable"
STORAGE_UNAVAILABLE = "StorageUnavailable"
WORKER_DIED = "WorkerDied"
# Not tried: the run stopped (the circuit breaker tripped) before this file's turn.
NOT_ATTEMPTED = "NotAttempted"
# The outages that trip the breaker.
OUTAGES = frozenset({SOURCE_UNREACHABLE, STORAGE_UNAVAILABLE})
