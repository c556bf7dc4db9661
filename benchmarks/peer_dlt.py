"""dlt's rest_api source -> duckdb on the same simulator: the peer to beat.

    python benchmarks/peer_dlt.py BASE_URL PER_PAGE WORK_DIR

Needs ``dlt[duckdb]`` in the interpreter that runs it (never a dependency of the project).
Prints a JSON line with its figures.
"""

from __future__ import annotations

import json
import sys
import time

import dlt
from dlt.sources.rest_api import rest_api_source


def main(base_url: str, per_page: int, work_dir: str) -> None:
    started = time.perf_counter()
    source = rest_api_source(
        {
            "client": {"base_url": f"{base_url}/api/"},
            "resources": [
                {
                    "name": "users",
                    "endpoint": {
                        "path": "users",
                        "params": {"per_page": per_page},
                        "data_selector": "data",
                        "paginator": {
                            "type": "page_number",
                            "base_page": 1,
                            "page_param": "page",
                            "total_path": "total_pages",
                        },
                    },
                }
            ],
        }
    )
    pipeline = dlt.pipeline(
        pipeline_name="bench",
        destination=dlt.destinations.duckdb(f"{work_dir}/peer.duckdb"),
        dataset_name="customers",
        pipelines_dir=work_dir,
        progress=None,
    )
    pipeline.run(source)
    with pipeline.sql_client() as client:
        records = client.execute_sql("select count(*) from users")[0][0]
    elapsed = time.perf_counter() - started
    print(json.dumps({"records": records, "run_s": elapsed}))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3])
