"""Names and bounds the settings and the command line share, importable without pydantic."""

from typing import Final

ENV_PREFIX: Final = "CUSTOMER_PIPELINE_"
MIN_RATE_LIMIT: Final = 0.001
MAX_RATE_LIMIT: Final = 1_000_000
MAX_WAIT_S: Final = 3600  # longest timeout or backoff: an hour is already a stall
MAX_PAGES: Final = 10_000_000
MAX_RESPONSE_BYTES: Final = 2**31
MAX_SEED: Final = 2**63 - 1  # a signed 64-bit integer, so every JSON reader keeps it exact
MAX_CACHE_TTL_S: Final = 366 * 86400  # a year: past that a cache is a copy, not a cache
