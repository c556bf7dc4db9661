"""One run sharded across a Dask cluster (``--dask``): the same stages, merged exactly.

    shards.py  a counted walk's units -> contiguous ranges (ShardSpec), one task each
    task.py    the worker: one shard through the stages, its winners sorted, in chunks
    client.py  the client: first unit, submit, replay the shards' events, merge into the
               run's spool (pulled a chunk at a time)

Imports distributed only when a run starts one (the ``[dask]`` extra).
"""

from .client import ClusterWalk, run_on_cluster
from .shards import ShardSpec, plan_shards

__all__ = ["ClusterWalk", "ShardSpec", "plan_shards", "run_on_cluster"]
