"""A job's rules resolved against its preset: what to find and what to do inside each mask.

``make_plan`` is where a usable envelope with bad rules becomes ``InvalidMessage``: unknown
preset or concept, or a value the action resolves to nothing in this preset (a colour that is
neither a palette id nor ``#RRGGBB``, an unknown tone). Each action's own resolution lives with
it in engine/actions/.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.actions import ACTIONS, Op
from engine.errors import InvalidMessage
from engine.job import Job
from presets import PRESETS, Concept, Preset


@dataclass(frozen=True)
class PlannedRule:
    concept: str
    op: Op
    instances: tuple[int, ...] | None  # None: every instance of the concept


@dataclass(frozen=True)
class Plan:
    preset: Preset
    rules: tuple[PlannedRule, ...]
    protect: tuple[str, ...]

    def concepts_to_find(self) -> list[Concept]:
        """Every concept the job needs a mask for: rule concepts first, then protect ones."""
        names = [r.concept for r in self.rules] + [p for p in self.protect]
        return [self.preset.concepts[n] for n in dict.fromkeys(names)]

    def concepts_to_prompt(self) -> list[Concept]:
        """The concepts the segmenter is asked for: derived ones replaced by their sources."""
        names: list[str] = []
        for concept in self.concepts_to_find():
            names.extend(concept.derived.sources if concept.derived else (concept.name,))
        return [self.preset.concepts[n] for n in dict.fromkeys(names)]


def make_plan(job: Job) -> Plan:
    preset = PRESETS.get(job.preset)
    if preset is None:
        raise InvalidMessage(f"unknown preset {job.preset!r}; known: {', '.join(sorted(PRESETS))}")
    unknown = [n for n in list(job.concepts) + job.protect if n not in preset.concepts]
    if unknown:
        raise InvalidMessage(
            f"unknown concept(s) for preset {preset.name}: {', '.join(dict.fromkeys(unknown))}"
        )
    rules = tuple(
        PlannedRule(
            concept=name,
            op=ACTIONS[rule.action].resolve(rule.value, preset, name),
            instances=tuple(rule.instances) if rule.instances is not None else None,
        )
        for name, rule in job.concepts.items()
    )
    return Plan(preset=preset, rules=rules, protect=tuple(dict.fromkeys(job.protect)))
