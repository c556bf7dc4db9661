"""The README's "Reading the outputs" one-liners, run as written against a real run's files.

The run is shaped like the readers' traps: 20,500 customers with no last name first (more
than DuckDB's and polars' type-guessing samples: DuckDB would type the column NULL and drop
every later name, polars would fail), then ones with a last name, dirty ones, duplicates and
a rejected record. Every one-liner must give the JSON export's customers, value for value.
"""

from __future__ import annotations

import ast
import asyncio
import json
import math
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from customer_pipeline import run_pipeline

from .conftest import BASE_URL, fast_settings

ROOT = Path(__file__).resolve().parent.parent
SECTION = "## Reading the outputs"
FILES = ("processed_customers.json", "processed_customers.jsonl", "processed_customers.parquet")
LIBRARIES = ("duckdb", "pandas", "polars")
CLEAN = 20_500


def section(readme: str) -> str:
    """The README's section on reading the outputs, up to the next section."""
    start = readme.index(f"\n{SECTION}\n")
    end = readme.find("\n## ", start + 1)
    return readme[start : end if end >= 0 else len(readme)]


def one_liners(text: str) -> Iterator[tuple[str, str, str, Any]]:
    """Run each ``name = ...`` line of the section's python blocks: (file, library, line, value)."""
    namespace: dict[str, Any] = {"__name__": "readme"}  # one session: later blocks reuse imports
    for block in re.findall(r"```python\n(.*?)```", text, flags=re.S):
        for statement in ast.parse(block).body:
            source = ast.get_source_segment(block, statement) or ""
            code = compile(ast.Module([statement], []), "README.md", "exec")
            exec(code, namespace)
            if not isinstance(statement, ast.Assign):
                continue
            files = set(re.findall(r"processed_customers\.\w+", source))
            assert len(files) == 1, f"reads no file or several: {source}"
            (target,) = statement.targets
            assert isinstance(target, ast.Name), source
            root = next(n.id for n in ast.walk(statement.value) if isinstance(n, ast.Name))
            library = getattr(namespace[root], "__name__", root).partition(".")[0]
            yield files.pop(), library, source, namespace[target.id]


def columns(value: Any) -> dict[str, list[Any]]:
    """A reader's table as one list of plain Python values per column, in the table's order."""
    if hasattr(value, "fetchall"):  # a DuckDB relation
        data = value.fetchall()
        return {name: [row[i] for row in data] for i, name in enumerate(value.columns)}
    if type(value).__module__.startswith("polars"):
        return value.to_dict(as_series=False)  # type: ignore[no-any-return]
    return {name: [plain(v) for v in value[name].tolist()] for name in value.columns}


def plain(value: Any) -> Any:
    """pandas' values (numpy arrays, NaN, NA) as the JSON export's Python values."""
    if hasattr(value, "tolist"):  # numpy array
        return value.tolist()
    if isinstance(value, float) and math.isnan(value):
        return None
    return None if type(value).__name__ == "NAType" else value


def check(text: str, folder: Path) -> None:
    """Every one-liner in ``text`` reads ``folder``'s files as the JSON export's customers."""
    customers = json.loads((folder / "processed_customers.json").read_bytes())["customers"]
    expected = {name: [c[name] for c in customers] for name in customers[0]}
    seen = set()
    cwd = Path.cwd()
    os.chdir(folder)
    try:
        for file, library, source, value in one_liners(text):
            seen.add((file, library))
            got = columns(value)
            assert list(got) == list(expected), source  # the export's columns, in its order
            assert got["customer_id"] == expected["customer_id"], source  # the same ids, in order
            for name, column in expected.items():
                assert got[name] == column, f"{name}: {source}"
                types = {type(v) for v in got[name]}
                assert types == {type(v) for v in column}, f"{name}: {source}"
    finally:
        os.chdir(cwd)
    assert seen == {(f, lib) for f in FILES for lib in LIBRARIES}, "a file or a reader is missing"


def users() -> list[list[dict[str, Any]]]:
    """Pages of CLEAN users with no last name, then one of all kinds of users."""
    def user(i: int, **changes: Any) -> dict[str, Any]:
        clean = {"id": i, "email": f"u{i}@x.io", "first_name": "Ann", "last_name": "Lee",
                 "avatar": f"https://x.io/{i}.png"}  # fmt: skip
        return {**clean, **changes}

    clean = [[user(i, last_name=None) for i in range(start, min(start + 2500, CLEAN + 1))]
             for start in range(1, CLEAN + 1, 2500)]  # fmt: skip
    last = [
        user(CLEAN + 1, first_name=None),
        user(CLEAN + 5),
        user(CLEAN + 2, email="no at sign"),
        user(CLEAN + 3, first_name=" ", last_name=None, avatar="ftp://x"),
        user(CLEAN + 4, id=str(CLEAN + 4), email=None),
        user(5, last_name=None, avatar=None),  # a worse copy: the first one stays
        user(CLEAN + 1, last_name="Better"),  # a better copy of a dirty one: it wins
        {"email": "no-id@x.io"},
    ]
    return [*clean, last]


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real run's output folder with every format."""
    folder = tmp_path_factory.mktemp("readers")
    pages = users()

    def answer(request: httpx.Request) -> httpx.Response:
        page = int(request.url.params["page"])
        return httpx.Response(200, json={"total_pages": len(pages), "data": pages[page - 1]})

    settings = fast_settings(output_dir=folder, format=["json", "jsonl", "parquet"])
    with respx.mock() as router:
        router.get(f"{BASE_URL}/api/users").mock(side_effect=answer)
        result = asyncio.run(run_pipeline(settings))
    assert (result.customers, result.duplicates_removed, result.rejected) == (CLEAN + 5, 2, 1)
    return folder


def test_the_readme_one_liners_read_every_output_as_the_export(outputs: Path) -> None:
    check(section((ROOT / "README.md").read_text()), outputs)


@pytest.mark.parametrize(
    "option",
    [", sample_size = -1", ", infer_schema_length=None"],
)
def test_without_a_readme_option_a_reader_gets_it_wrong(outputs: Path, option: str) -> None:
    text = section((ROOT / "README.md").read_text())
    assert option in text
    with pytest.raises(Exception) as caught:  # a wrong table, or the reader fails
        check(text.replace(option, ""), outputs)
    # DuckDB drops the later last names, polars refuses them: the column typed from nulls.
    assert re.search(r"last_name|NULL-typed column", str(caught.value))
