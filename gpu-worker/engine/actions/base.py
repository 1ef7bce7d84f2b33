"""What an action is, in one place: the message value it accepts, how a rule's value resolves
against the job's preset, how far its edit reaches, and the edit itself.

Each action is one module of this package holding one ``Action`` subclass instance named
``ACTION``; ``engine/actions/__init__.py`` collects them into ``ACTIONS``. The message schema
(engine/job.py) validates ``Rule.action`` and ``Rule.value`` through the registry, the rules
(engine/rules.py) resolve values with it and the applier (engine/applier.py) runs the edits it
names, so adding an action is adding one module here.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, Protocol, TypeVar

import numpy as np
from pydantic import TypeAdapter, ValidationError

from engine.edits.backend import Backend
from engine.edits.remove import Inpainter
from presets import Preset


class Op(Protocol):
    """A rule resolved against its preset (a frozen dataclass): ``action`` names who runs it."""

    action: ClassVar[str]


@dataclass(frozen=True)
class Tools:
    """What the edits run on, chosen once per worker and handed to every edit."""

    backend: Backend  # the per-pixel kernels (numpy, or torch on a GPU)
    inpainter: Inpainter


Pixels = TypeVar("Pixels")  # a numpy array on the host, a torch tensor on a device


@dataclass(frozen=True)
class Before(Generic[Pixels]):
    """An edit's window as this photo's earlier edits found it, for the edits that make discrete
    choices there (remove's sources and orientations).

    ``photo`` is the decoded photo's window: the same bytes on the host and on a device, so a
    choice cannot hinge on how an earlier edit rounded (the numpy and torch paths may leave a
    pixel a level apart). ``filled`` marks the window's pixels an earlier remove made up (None:
    none): the photo there shows the removed object, so nothing may be chosen from them."""

    photo: Pixels
    filled: Pixels | None = None


@dataclass(frozen=True)
class Span:
    """Where an edit works: the pixels it owns, how far past the rule's own region its soft edge
    may change pixels, the margin of surroundings its window keeps around ``region``, and whether
    the rule's own pixels are replaced whole."""

    region: np.ndarray
    reach: int
    pad: int
    # An edit that replaces the object (remove): the rule's own pixels weigh 1 whatever the matte
    # says (a share of the object would otherwise stay along its rim, a faint outline), and weights
    # too small to move a pixel by a level are dropped, so the hole it fills holds only pixels it
    # may change and does not hang on float bits either side of 0.
    replaces: bool = False


class Action(ABC):
    """One kind of edit a rule can ask for."""

    name: ClassVar[str]
    value_type: ClassVar[Any]  # what the message's ``value`` must be (a type pydantic validates)
    value_help: ClassVar[str]  # the same in words, for error messages: "takes no value"
    value_doc: ClassVar[str]  # the value, for the contract's table of actions (docs/CONTRACT.md)
    summary: ClassVar[str]  # what the action does, for the same table
    fills: ClassVar[bool] = False  # its pixels are made up from their surroundings (``Before.filled``)

    def __init__(self) -> None:
        self._value = TypeAdapter(self.value_type)

    def parse_value(self, value: Any) -> Any:
        """The message's ``value`` validated against ``value_type``; ``ValueError`` with a sentence."""
        try:
            return self._value.validate_python(value)
        except ValidationError as exc:
            details = "; ".join(
                (".".join(str(p) for p in err["loc"]) + ": " if err["loc"] else "") + err["msg"]
                for err in exc.errors()[:4]
            )
            raise ValueError(f"{self.name} {self.value_help} ({details})") from None

    @abstractmethod
    def resolve(self, value: Any, preset: Preset, concept: str) -> Op:
        """The op for a parsed value; ``InvalidMessage`` for values the preset does not know."""

    def span(self, region: np.ndarray, protect: np.ndarray | None, band: int) -> Span:
        """By default an edit owns its region and blends over the usual soft-edge band."""
        return Span(region, band, 2 * band + 4)

    @abstractmethod
    def edit(self, op: Op, rgb: np.ndarray, alpha: np.ndarray, region: np.ndarray, band: int,
             tools: Tools, before: Before[np.ndarray]) -> np.ndarray:
        """Edited sRGB (0..255 float32) for each pixel of the window ``rgb`` where ``alpha > 0``,
        in the order of ``np.nonzero(alpha > 0)``; ``region`` is the span's region in the window.
        An edit that makes discrete choices makes them on ``before``."""
