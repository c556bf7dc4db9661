"""WinnerIndex packing and the atomic writers."""

from __future__ import annotations

import itertools
import random
from pathlib import Path

import orjson
import pytest

from customer_pipeline.dedup import WinnerIndex, describe_code, summary_code
from customer_pipeline.rules import process
from customer_pipeline.writer import RejectedWriter, Spool, atomic_file, write_json


def test_winner_does_not_depend_on_arrival_order() -> None:
    copies = [  # (score, page, position, tag)
        (90, 3, 0, "a"), (100, 5, 2, "b"), (100, 4, 9, "c"), (100, 4, 1, "d"), (70, 1, 0, "e"),
    ]  # fmt: skip
    winners = set()
    for order in itertools.permutations(copies):
        index = WinnerIndex()
        tags = {}
        for offset, (score, page, position, tag) in enumerate(order):
            index.offer(7, score, page, position, 0, offset)
            tags[offset] = tag
        [(_, offset)] = list(index.winners())
        winners.add(tags[offset])
        assert index.duplicates == 4
    assert winners == {"d"}  # highest score, then lowest page, then earliest position


def test_winners_come_sorted_by_id() -> None:
    index = WinnerIndex()
    ids = random.Random(1).sample(range(1, 10**12), 500)
    for offset, customer_id in enumerate(ids):
        index.offer(customer_id, 100, 1, 0, 0, offset)
    assert [i for i, _ in index.winners()] == sorted(ids)


def test_summary_code_round_trips() -> None:
    raw = {"id": 5, "email": "bad", "first_name": "A", "avatar": "ftp://x"}
    customer = process(raw, seed=3)
    issues, values = describe_code(summary_code(customer))
    assert issues == customer["quality_issues"]
    assert values == (
        customer["engagement_level"],
        customer["activity_status"],
        customer["acquisition_channel"],
        customer["market_segment"],
        customer["customer_tier"],
    )


def test_spool_reads_back_lines_by_offset(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    offsets = [spool.append(orjson.dumps({"n": i, "s": "x" * i})) for i in range(50)]
    got = [orjson.loads(line)["n"] for line in spool.lines((0, o) for o in reversed(offsets))]
    assert got == list(reversed(range(50)))
    spool.close()
    assert list(tmp_path.iterdir()) == []


def test_atomic_file_leaves_nothing_when_the_block_fails(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    target.write_text("old and good")
    with pytest.raises(RuntimeError), atomic_file(target) as handle:
        handle.write(b"half a file")
        raise RuntimeError("crash mid-write")
    assert target.read_text() == "old and good"
    assert list(tmp_path.iterdir()) == [target]


def test_write_json_publishes_readable_files(tmp_path: Path) -> None:
    write_json(tmp_path / "r.json", {"a": 1})
    path = tmp_path / "r.json"
    assert orjson.loads(path.read_bytes()) == {"a": 1}
    assert path.stat().st_mode & 0o044  # readable by others, like any output file


def test_rejected_writer_publishes_only_on_commit(tmp_path: Path) -> None:
    path = tmp_path / "rejected_records.jsonl"
    writer = RejectedWriter(path)
    writer.write(2, 3, "id missing", {"email": "x"})
    assert not path.exists()
    writer.commit()
    assert orjson.loads(path.read_bytes()) == {
        "page": 2, "position": 3, "reason": "id missing", "record": {"email": "x"},
    }  # fmt: skip
    aborted = RejectedWriter(tmp_path / "other.jsonl")
    aborted.write(1, 0, "x", 1)
    aborted.abort()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rejected_records.jsonl"]
    assert RejectedWriter(tmp_path / "none.jsonl").commit() is None
