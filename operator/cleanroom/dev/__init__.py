"""Development-only code: what `make dev` and the tests use where the production path cannot run (kwok's pods
do not execute). No production module imports it; the hub names its spawner here by a string, when told to."""
