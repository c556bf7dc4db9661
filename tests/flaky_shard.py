"""A Dask worker preload: each shard task raises on its first attempt, after doing its work.

Loaded by the workers of a test's LocalCluster (``distributed.worker.preload``); the folder
in FLAKY_SHARD_DIR holds one flag file per shard that has failed once, shared by the workers.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

FOLDER_ENV = "FLAKY_SHARD_DIR"


def dask_setup(worker: Any) -> None:
    """Wrap run_shard in this worker: a shard's first attempt runs, then raises."""
    from customer_pipeline.cluster import task

    real = task.run_shard
    folder = Path(os.environ[FOLDER_ENV])

    def flaky(settings: Any, spec: Any) -> Any:
        output = real(settings, spec)
        try:
            os.close(os.open(folder / spec.name, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return output  # this shard already failed once: the retry succeeds
        raise RuntimeError(f"flaky shard {spec.name}: first attempt fails on purpose")

    # Tasks name run_shard by module and attribute: the worker unpickles this one.
    task.run_shard = flaky  # type: ignore[assignment]
