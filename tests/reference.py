"""An independent, sequential reference for what a run must export from a simulator dataset."""

from __future__ import annotations

from typing import Any

from customer_pipeline.rules import Rejected, process
from customer_pipeline.simulator import Dataset


def expected_customers(dataset: Dataset, per_page: int, seed: int) -> list[dict[str, Any]]:
    """Every page in order, every record through the rules, the best copy of each id."""
    best: dict[int, tuple[tuple[int, int, int], dict[str, Any]]] = {}
    for page in range(1, dataset.total_pages(per_page) + 1):
        for position, raw in enumerate(dataset.page_records(page, per_page)):
            try:
                customer = process(raw, seed)
            except Rejected:
                continue
            rank = (customer["data_quality_score"], -page, -position)
            current = best.get(customer["customer_id"])
            if current is None or rank > current[0]:
                best[customer["customer_id"]] = (rank, customer)
    return [best[i][1] for i in sorted(best)]


def expected_rejections(dataset: Dataset, per_page: int) -> int:
    count = 0
    for page in range(1, dataset.total_pages(per_page) + 1):
        for raw in dataset.page_records(page, per_page):
            try:
                process(raw, 0)
            except Rejected:
                count += 1
    return count
