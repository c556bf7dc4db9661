"""The run's event bus: emitters hand events over, subscribers get the types they asked for.

Dispatch is one dict lookup by the event's exact type and a loop over its handlers, so an
event with no subscriber costs next to nothing; handlers run synchronously, in the emitter's
task, and must be quick (count, remember, call back), never block.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

E = TypeVar("E")


class Bus:
    """Routes each event to the handlers subscribed to its type, in subscription order."""

    __slots__ = ("_handlers",)

    def __init__(self) -> None:
        self._handlers: dict[type[Any], list[Callable[[Any], None]]] = {}

    def subscribe(self, event_type: type[E], handler: Callable[[E], None]) -> None:
        """Call ``handler(event)`` for every event of exactly ``event_type``."""
        self._handlers.setdefault(event_type, []).append(handler)

    def wants(self, event_type: type[Any]) -> bool:
        """Whether any handler listens to ``event_type`` (to skip building unwanted events)."""
        return event_type in self._handlers

    def emit(self, event: object) -> None:
        """Hand ``event`` to its subscribers."""
        handlers = self._handlers.get(type(event))
        if handlers is not None:
            for handler in handlers:
                handler(event)
