"""Bounded phases an item passes through, so photos overlap without memory growing.

An item of a job goes ``fetch`` (its compressed input downloaded and waiting) -> ``pixels``
(decoded: segmented, edited, encoded; the memory that matters, about 36 MB of RGB per 12 MP
photo plus its masks and edit planes) -> ``store`` (its encoded bytes uploading). Each phase
admits at most ``limit`` items. An item enters the next phase before it leaves the one it is in,
so a slow later phase (a slow upload) holds the earlier ones back instead of letting finished
work pile up, while different items work in different phases at once: the next photos download
and decode while the device segments, and the previous ones upload.

    gates = PhaseGates(4)
    place = gates.place()        # one per item
    await place.enter("fetch")
    ...
    await place.enter("pixels")  # waits for a free pixels slot, then frees its fetch slot
    ...
    place.leave()                # always, in a finally
"""

from __future__ import annotations

import asyncio
from typing import Literal

Phase = Literal["fetch", "pixels", "store"]
PHASES: tuple[Phase, ...] = ("fetch", "pixels", "store")


class PhaseGates:
    """One semaphore per phase, shared by the items of one job."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.gates = {phase: asyncio.Semaphore(limit) for phase in PHASES}

    def place(self) -> ItemPlace:
        return ItemPlace(self)


class ItemPlace:
    """Where one item is: the slot it holds, at most one at a time."""

    def __init__(self, gates: PhaseGates) -> None:
        self._gates = gates
        self.phase: Phase | None = None

    async def enter(self, phase: Phase) -> None:
        """Take a slot in ``phase`` (waiting for one), then give back the slot held before.
        Cancelled while waiting, the item still holds its previous slot until ``leave``."""
        if self.phase is not None and PHASES.index(phase) <= PHASES.index(self.phase):
            raise ValueError(f"an item moves forward through {PHASES}; it is in {self.phase}, not before {phase}")
        await self._gates.gates[phase].acquire()
        self.leave()
        self.phase = phase

    def leave(self) -> None:
        if self.phase is not None:
            self._gates.gates[self.phase].release()
            self.phase = None
