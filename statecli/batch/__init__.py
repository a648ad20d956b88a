"""Many checkpoints at once: inputs (paths, folders, globs, lists, shards), the one per-checkpoint function
and its NDJSON records, resume and cache, executors (threads, processes, Dask) and the offline report."""

from __future__ import annotations
