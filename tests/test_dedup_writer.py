"""The sorted spool that deduplicates, and the atomic writers."""

from __future__ import annotations

import itertools
import random
import tempfile
from pathlib import Path

import orjson
import pytest

from customer_pipeline.dedup import SortedSpool, describe_code, summary_code
from customer_pipeline.rules import process
from customer_pipeline.writer import RejectedWriter, RunOutputs, atomic_file, write_json


def winners_of(copies: list[tuple[int, int, int, int, str]], run_bytes: int) -> list[str]:
    """Spool (id, score, page, position, tag) copies; the tags of the winners, by id."""
    with tempfile.TemporaryDirectory() as folder:
        spool = SortedSpool(Path(folder), run_bytes=run_bytes)
        for customer_id, score, page, position, tag in copies:
            spool.add(customer_id, score, page, position, 0, orjson.dumps({"tag": tag}) + b"\n")
        tags = [orjson.loads(line)["tag"] for line in spool.winners()]
        spool.close()
    return tags


@pytest.mark.parametrize("run_bytes", [1, 10_000_000])  # a run per line, or all in memory
def test_winner_does_not_depend_on_arrival_order(run_bytes: int) -> None:
    copies = [  # (id, score, page, position, tag)
        (7, 90, 3, 0, "a"), (7, 100, 5, 2, "b"), (7, 100, 4, 9, "c"), (7, 100, 4, 1, "d"),
        (7, 70, 1, 0, "e"),
    ]  # fmt: skip
    for order in itertools.permutations(copies):
        assert winners_of(list(order), run_bytes) == ["d"]  # score, then page, then position


@pytest.mark.parametrize("run_bytes", [512, 10_000_000])
def test_winners_come_sorted_by_id_once_each(run_bytes: int) -> None:
    rng = random.Random(1)
    ids = rng.sample(range(1, 2**63 - 1), 300)
    copies = [(i, rng.choice([60, 80, 100]), rng.randint(1, 9), n, str(i)) for n, i in
              enumerate(ids + ids[:50])]  # fmt: skip
    rng.shuffle(copies)
    assert winners_of(copies, run_bytes) == [str(i) for i in sorted(ids)]


def test_spool_counts_unique_duplicates_and_codes(tmp_path: Path) -> None:
    spool = SortedSpool(tmp_path, run_bytes=64)
    for customer_id, code in [(1, 5), (2, 5), (1, 9), (3, 7)]:
        spool.add(customer_id, 100, 1, customer_id, code, b"{}\n")
    assert len(list(spool.winners())) == 3
    assert (spool.offered, spool.unique, spool.duplicates) == (4, 3, 1)
    assert spool.code_counts == {5: 2, 7: 1}
    spool.close()
    assert list(tmp_path.iterdir()) == []  # run files are unlinked while open


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


def test_run_outputs_publish_the_set_on_commit_and_nothing_before(tmp_path: Path) -> None:
    names = ["processed_customers.json", "rejected_records.jsonl", "summary_report.json"]
    runs = [RunOutputs(tmp_path, [names[0]]) for _ in range(2)]
    for outputs, publish in zip(runs, [False, True], strict=True):
        with outputs.staging(names[0]) as handle:
            handle.write(b'{"customers": [{"customer_id": 1}]}')
        outputs.rejected.write(1, 0, "id missing", {})
        assert [p.name for p in tmp_path.iterdir() if p.name in names] == []
        if publish:
            assert outputs.commit({"counts": {}}) == tmp_path / "rejected_records.jsonl"
        else:
            outputs.abort()
            assert list(tmp_path.iterdir()) == []  # nothing staged is left either
    assert sorted(p.name for p in tmp_path.iterdir()) == names
    assert orjson.loads((tmp_path / names[0]).read_bytes())["customers"] == [{"customer_id": 1}]
