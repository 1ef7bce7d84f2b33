"""Write what the code decides into the documents: the tables of docs/CONTRACT.md (the job's
fields and limits, each preset's concepts and palette, the named tones, the actions, the
settings) and the whole of .env.example (every setting with its default and meaning).

    python -m scripts.contract_tables            rewrite them
    python -m scripts.contract_tables --check    exit 1, naming them, when one is stale

Each table sits between two marker comments in the document,
``<!-- generated: NAME ... -->`` and ``<!-- end generated: NAME -->``; the text around them is
written by hand. The tests run ``--check``'s comparison, so a change to a preset, a setting or
the job schema that is not carried into the documents fails the suite. A setting's meaning is
the docstring under its field in engine/settings.py.
"""

from __future__ import annotations

import argparse
import inspect
import re
import sys
import textwrap
import typing
from collections.abc import Callable, Iterable
from pathlib import Path

from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from engine import job as job_schema
from engine.actions import ACTIONS
from engine.actions.tone import NAMED_TONES, ToneParams
from engine.settings import PACKAGE_DIR, Settings
from presets import PRESETS

REPO = PACKAGE_DIR.parent
DOC = REPO / "docs" / "CONTRACT.md"
ENV_EXAMPLE = REPO / ".env.example"
BEGIN = "<!-- generated: {name} (python -m scripts.contract_tables) -->"
END = "<!-- end generated: {name} -->"

def markdown_table(header: Iterable[str], rows: Iterable[Iterable[object]]) -> str:
    header = list(header)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell).replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _code(text: object) -> str:
    return f"`{text}`"


# -- the job ---------------------------------------------------------------------------------------


def _type_name(annotation: object) -> str:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin is typing.Literal:
        return " or ".join(_code(a) for a in args)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return " or ".join(_type_name(a) for a in args if a is not type(None)) + (
            " or null" if type(None) in args else "")
    if origin is list:
        return f"list of {_type_name(args[0])}"
    if origin is dict:
        return f"object of {_type_name(args[0])} to {_type_name(args[1])}"
    if inspect.isclass(annotation) and issubclass(annotation, BaseModel):
        return annotation.__name__
    return {str: "string", int: "integer", float: "number", bool: "boolean",
            typing.Any: "per action (below)"}.get(annotation, str(annotation))


def _limits(info: FieldInfo) -> list[str]:
    """The constraints pydantic enforces on one field, in words."""
    words = []
    for meta in info.metadata:
        for attr, text in (("ge", ">= {}"), ("gt", "> {}"), ("le", "<= {}"), ("lt", "< {}"),
                           ("min_length", "at least {} long"), ("max_length", "at most {} long"),
                           ("pattern", "matches `{}`")):
            value = getattr(meta, attr, None)
            if value is not None:
                words.append(text.format(value))
    args = typing.get_args(info.annotation)
    if typing.get_origin(info.annotation) is typing.Annotated:
        for meta in args[1:]:
            words += _limits(FieldInfo(annotation=None, metadata=[meta]))
    return words


def _field_rows(model: type[BaseModel], also: type[BaseModel] | None = None) -> list[list[str]]:
    """One row per field: name, type, required or default, limits (``also``: a model that checks
    the same fields earlier, whose limits apply too)."""
    rows = []
    for name, info in model.model_fields.items():
        limits = _limits(info)
        if also is not None and name in also.model_fields:
            limits += [w for w in _limits(also.model_fields[name]) if w not in limits]
        if info.is_required():
            need = "required"
        elif info.default_factory is not None:
            need = f"default `{info.default_factory()!r}`".replace("'", '"')
        else:
            need = "default `null`" if info.default is None else f"default `{info.default!r}`".replace("'", '"')
        rows.append([_code(name), _type_name(info.annotation), need, "; ".join(limits) or "-"])
    return rows


def job_table() -> str:
    header = ["field", "type", "required / default", "limits checked"]
    parts = []
    item_envelope = job_schema.Envelope.model_fields["items"].annotation
    for title, model, also in (("The job", job_schema.Job, job_schema.Envelope),
                               ("An item (`items[]`)", job_schema.Item, typing.get_args(item_envelope)[0]),
                               ("A rule (`concepts.<Concept>`)", job_schema.Rule, None),
                               ("Tone parameters (`value` of `tone` as an object)", ToneParams, None)):
        parts.append(f"**{title}**\n\n" + markdown_table(header, _field_rows(model, also)))
    parts.append(f"Keys: at most {job_schema.MAX_KEY_BYTES} bytes in UTF-8 and {job_schema.MAX_SEGMENT_BYTES} a path "
                 "segment, valid Unicode without control, format or line-separator characters; no two items of a "
                 f"`full` or `apply` job share an output or preview key; items: at most {job_schema.MAX_ITEMS}.")
    return "\n\n".join(parts)


# -- presets, tones, actions ------------------------------------------------------------------------


def presets_table() -> str:
    parts = []
    for name, preset in sorted(PRESETS.items()):
        concepts = markdown_table(
            ["concept", "SAM3 prompt", "threshold", "instances listed separately"],
            ([_code(c.name), f'"{c.prompt}"', f"{c.threshold:.2f}", "yes" if c.multi_instance else "no"]
             for c in preset.concepts.values()))
        palette = markdown_table(
            ["palette id", "sRGB", "material"],
            ([_code(p.id), "#{:02X}{:02X}{:02X}".format(*p.rgb),
              p.material if p.material == "flat" else f"{p.material}, spread {p.spread:.2f}"]
             for p in preset.palette.values()))
        parts.append(f"#### `{name}`\n\n{concepts}\n\nPalette of `{name}`:\n\n{palette}")
    return "\n\n".join(parts)


def tones_table() -> str:
    fields = list(ToneParams.model_fields)
    rows = ([_code(name), *(f"{getattr(params, f):+.2f}" for f in fields)] for name, params in NAMED_TONES.items())
    return markdown_table(["tone", *fields], rows)


def actions_table() -> str:
    return markdown_table(["action", "value", "what it does"],
                          ([_code(a.name), a.value_doc, a.summary] for a in ACTIONS.values()))


# -- settings --------------------------------------------------------------------------------------


def env_name(field: str) -> str:
    return field.upper()


def setting_default(name: str, info: FieldInfo) -> str:
    """The default as an operator writes it in the environment ("unset" when there is none)."""
    if info.default_factory is not None:
        value = info.default_factory()
        if not isinstance(value, list):
            return "depends on the host"
        return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value) or "unset"
    value = info.default
    if value is None or value is PydanticUndefined or isinstance(value, SecretStr):
        return "unset"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, Path) and value.is_relative_to(REPO):
        return str(value.relative_to(REPO))
    return str(value)


def settings_rows() -> list[tuple[str, str, str]]:
    rows = []
    for name, info in Settings.model_fields.items():
        if not info.description:
            raise SystemExit(f"engine/settings.py: {name} has no description (a docstring under the field)")
        rows.append((env_name(name), setting_default(name, info), info.description))
    return rows


def settings_table() -> str:
    words = {"unset", "depends on the host"}
    return markdown_table(["setting", "default", "meaning"],
                          ([_code(n), d if d in words else _code(d), m] for n, d, m in settings_rows()))


def _sections() -> dict[str, str]:
    """Field name -> the heading comment (``# Storage``) it sits under in engine/settings.py."""
    sections, current = {}, ""
    for line in inspect.getsource(Settings).splitlines():
        heading = re.match(r"^    # (.+)$", line)
        field = re.match(r"^    (\w+): ", line)
        if heading:
            current = heading.group(1)
        elif field and field.group(1) in Settings.model_fields:
            sections[field.group(1)] = current
    return sections


def env_example() -> str:
    """.env.example: every setting, its meaning as a comment, then ``NAME=default`` (commented out
    when it has no default, one that depends on the host, or a path inside the checkout)."""
    lines = ["# Every setting the worker reads, with its default and meaning (engine/settings.py; this file",
             "# is written by `python -m scripts.contract_tables`). Copy it to gpu-worker/.env, or set the",
             "# values in the environment or on the Runpod endpoint. Secrets are never logged."]
    sections, heading = _sections(), None
    for (name, default, meaning), field in zip(settings_rows(), Settings.model_fields):
        if sections.get(field) != heading:
            heading = sections.get(field)
            lines += ["", f"# --- {heading} " + "-" * max(3, 94 - len(heading))]
        lines += textwrap.wrap(meaning, 98, initial_indent="# ", subsequent_indent="# ")
        info = Settings.model_fields[field]
        if default in ("unset", "depends on the host"):
            lines.append(f"# {name}=")
        elif isinstance(info.default, Path) and info.default.is_relative_to(PACKAGE_DIR):
            lines.append(f"# {name}=./{info.default.relative_to(PACKAGE_DIR)}")
        else:
            lines.append(f"{name}={default}")
    return "\n".join(lines) + "\n"


TABLES: dict[str, Callable[[], str]] = {
    "job": job_table,
    "presets": presets_table,
    "tones": tones_table,
    "actions": actions_table,
    "settings": settings_table,
}


def render(text: str) -> str:
    """``text`` with every generated table rewritten; each must have its markers."""
    for name, make in TABLES.items():
        begin, end = BEGIN.format(name=name), END.format(name=name)
        pattern = re.compile(re.escape(begin) + r"\n.*?" + re.escape(end), re.S)
        if not pattern.search(text):
            raise SystemExit(f"{DOC.relative_to(REPO)}: no markers for the {name!r} table ({begin} ... {end})")
        text = pattern.sub(lambda _: f"{begin}\n{make()}\n{end}", text)
    return text


def stale_tables(text: str) -> list[str]:
    fresh = render(text)
    return [name for name in TABLES
            if _between(text, name) != _between(fresh, name)]


def _between(text: str, name: str) -> str:
    start = text.index(BEGIN.format(name=name))
    return text[start:text.index(END.format(name=name), start)]


def stale() -> list[str]:
    """What differs from the code: the names of stale tables, and ``.env.example`` when it is."""
    found = stale_tables(DOC.read_text(encoding="utf-8"))
    if not ENV_EXAMPLE.is_file() or ENV_EXAMPLE.read_text(encoding="utf-8") != env_example():
        found.append(".env.example")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 when something is stale")
    args = parser.parse_args(argv)
    if args.check:
        found = stale()
        if found:
            print(f"stale: {', '.join(found)}; run python -m scripts.contract_tables", file=sys.stderr)
            return 1
        print("docs/CONTRACT.md tables and .env.example are up to date")
        return 0
    DOC.write_text(render(DOC.read_text(encoding="utf-8")), encoding="utf-8")
    ENV_EXAMPLE.write_text(env_example(), encoding="utf-8")
    print(f"written: the tables of docs/CONTRACT.md ({', '.join(TABLES)}) and .env.example")
    return 0


if __name__ == "__main__":
    sys.exit(main())
