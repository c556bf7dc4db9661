"""Stable pseudo-random numbers keyed by (seed, id): the same everywhere, every run."""

from __future__ import annotations

from hashlib import blake2b

_BITS = 24
_MASK = (1 << _BITS) - 1
_SCALE = float(1 << _BITS)


def stable_units(seed: int, key: object, salt: bytes, count: int) -> list[float]:
    """``count`` (at most 5) independent uniforms in [0, 1) determined by (seed, key, salt)."""
    digest = blake2b(f"{seed}:{key}".encode(), digest_size=16, person=salt[:16]).digest()
    number = int.from_bytes(digest, "little")
    return [((number >> (_BITS * i)) & _MASK) / _SCALE for i in range(count)]


def stable_unit(seed: int, key: object, salt: bytes) -> float:
    """One uniform in [0, 1) determined by (seed, key, salt)."""
    return stable_units(seed, key, salt, 1)[0]
