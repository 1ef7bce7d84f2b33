"""The registry of actions: every module of this package that defines ``ACTION`` (an
``engine.actions.base.Action``) is registered under ``ACTION.name``.

``ACTIONS`` is what the message schema, the rules and the applier read. ``register`` adds one
more at run time (a plug-in, or a test's own action).
"""

from __future__ import annotations

import importlib
import pkgutil

from engine.actions.base import Action, Before, Op, Span, Tools

ACTIONS: dict[str, Action] = {}


def register(action: Action) -> Action:
    if action.name in ACTIONS and ACTIONS[action.name] is not action:
        raise ValueError(f"an action named {action.name!r} is already registered")
    ACTIONS[action.name] = action
    return action


def action_for(op: Op) -> Action:
    return ACTIONS[op.action]


for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    _action = getattr(importlib.import_module(f"{__name__}.{_module}"), "ACTION", None)
    if isinstance(_action, Action):
        register(_action)

__all__ = ["ACTIONS", "Action", "Before", "Op", "Span", "Tools", "action_for", "register"]
