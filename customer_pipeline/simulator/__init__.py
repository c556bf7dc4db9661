"""A reqres-compatible API simulator that misbehaves on purpose, reproducibly.

``GET /api/users`` answers a listing page in one of five pagination styles (``page_number``,
the reqres envelope, by default; ``offset``, ``cursor``, ``link``, ``next_url``), with flat or
nested field names and object or bare-list bodies; ``GET /api/users/{id}`` one user or 404
``{}``. The data (the 12 real reqres users, then synthetic ones) and its dirt and duplicates
are a pure function of the seed (``Dataset``), so tests know the exact expected customers.
Faults (5xx, 429 from a token bucket, latency, truncated bodies, dropped connections) are
drawn per request from a seeded generator, whatever the style.

Modules: ``config`` (what to serve), ``dataset`` (who), ``pagination`` (how a request becomes
a body), ``app`` (the aiohttp server and its faults).
"""

from .app import Simulator, SimulatorStats, serve
from .config import SimulatorConfig
from .dataset import DIRT_KINDS, REAL_USERS, Dataset

__all__ = [
    "DIRT_KINDS",
    "REAL_USERS",
    "Dataset",
    "Simulator",
    "SimulatorConfig",
    "SimulatorStats",
    "serve",
]
