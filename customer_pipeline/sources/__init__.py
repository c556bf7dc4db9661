"""Sources: any paginated JSON listing, by settings.

    paginators.py  unit -> request, response -> page + next step (page_number, offset,
                   link, cursor, next_url)
    body.py        records at data_path, counts, the field map
    link.py        RFC 8288 Link headers
    plan.py        the fan-out's bookkeeping (UnitPlan)
    source.py      the walk: a fan-out or a chain, through the fetcher (http)
    units.py       Unit, Page, what a resumed walk needs (Recorded)

Imports http, observe, settings and errors; the stages and the pipeline import it.
"""

from .body import FieldMap, Records, field_map
from .paginators import PAGINATORS, Paginator, make_paginator
from .source import Source, open_source
from .units import Page, PageSummary, Recorded, Shard, StopSignal, Unit, Walk

__all__ = [
    "PAGINATORS",
    "FieldMap",
    "Page",
    "PageSummary",
    "Paginator",
    "Recorded",
    "Records",
    "Shard",
    "Source",
    "StopSignal",
    "Unit",
    "Walk",
    "field_map",
    "make_paginator",
    "open_source",
]
