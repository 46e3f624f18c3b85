"""Alias state from the event log.

Every alias change is an immutable event file named by a time-ordered id, so concurrent writers
never overwrite each other's record and the log alone determines each alias. The alias document
(`<brand>/aliases/<alias>.json`) is a one-read cache of the log's result for the serving poll.

Replay treats an alias as a stack: `set` pushes a version, `rollback` pops back to the version
it names. So after set v1, set v2, set v3: rollback -> v2, rollback again -> v1, and promoting v1
again pushes it anew (a later rollback returns to whatever was production before that).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from bg_platform.registry.metadata import Event


def replay(events: Iterable[Event], alias: str) -> list[str]:
    """The alias's version stack after the events (in id order); the last item is current."""
    stack: list[str] = []
    for event in sorted(events, key=lambda e: e.id):
        if event.alias != alias:
            continue
        if event.action == "set":
            stack.append(event.version)
        elif event.action == "rollback":
            if stack:
                stack.pop()
            # A rollback names its target; if a concurrent change reordered the stack, the
            # recorded target wins so replay always agrees with what the writer saw.
            if not stack or stack[-1] != event.version:
                stack.append(event.version)
    return stack


def last_event_id(events: Iterable[Event], alias: str) -> str | None:
    ids = [e.id for e in events if e.alias == alias and e.action in ("set", "rollback")]
    return max(ids) if ids else None


def alias_doc(brand: str, alias: str, version: str, event_id: str | None, updated_at: str) -> dict[str, Any]:
    return {"brand": brand, "alias": alias, "version": version, "event": event_id, "updated_at": updated_at}
