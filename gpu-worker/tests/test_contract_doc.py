"""The documents a user reads agree with the code: docs/CONTRACT.md's generated tables and
.env.example are current, every relative link resolves inside the repository, every setting and
error code is documented."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from engine import errors
from engine.settings import Settings
from scripts import contract_tables

REPO = contract_tables.REPO
DOCS = [REPO / "README.md", REPO / "CHANGELOG.md", REPO / "docs" / "DEPLOY.md", REPO / "docs" / "CONTRACT.md",
        REPO / "docs" / "BENCHMARKS.md", REPO / "docs" / "QUALITY.md"]
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")
WORK_LOG = re.compile(r"\b(this|previous|last|earlier|next) (stop|session)\b|\bre-measured\b|\bnot measured again\b", re.I)


def links(doc: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", doc.read_text(encoding="utf-8"), flags=re.S)
    return [a or b for a, b in LINK.findall(text)]


def github_anchor(heading: str) -> str:
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(doc: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", doc.read_text(encoding="utf-8"), flags=re.S)
    return {github_anchor(h) for h in re.findall(r"^#+ (.+)$", text, re.M)}


def test_generated_tables_and_env_example_are_current():
    assert contract_tables.stale() == [], "run: cd gpu-worker && python -m scripts.contract_tables"


def test_stale_table_is_found():
    text = contract_tables.DOC.read_text(encoding="utf-8")
    assert contract_tables.stale_tables(text) == []
    edited = text.replace("| `Wall` |", "| `Walls` |", 1)
    assert contract_tables.stale_tables(edited) == ["presets"]


@pytest.mark.parametrize("doc", DOCS, ids=lambda d: str(d.relative_to(REPO)))
def test_relative_links_resolve_inside_the_repository(doc):
    assert doc.is_file()
    for link in links(doc):
        if re.match(r"^[a-z][a-z0-9+.-]*:", link):  # http(s), mailto: not files of this repository
            continue
        path, _, anchor = link.partition("#")
        target = (doc.parent / path).resolve() if path else doc
        assert target.is_relative_to(REPO), f"{doc.name}: {link} leaves the repository"
        assert target.exists(), f"{doc.name}: {link} does not exist"
        if anchor and target.suffix == ".md":
            assert anchor in anchors(target), f"{doc.name}: {link}: no heading #{anchor} in {target.name}"


@pytest.mark.parametrize("doc", [REPO / "README.md", REPO / "docs" / "DEPLOY.md"], ids=lambda d: d.name)
def test_readme_and_deploy_link_the_contract(doc):
    assert any(link.split("#")[0].endswith("CONTRACT.md") and "shared" not in link for link in links(doc))


@pytest.mark.parametrize("doc", DOCS, ids=lambda d: str(d.relative_to(REPO)))
def test_documents_speak_of_the_project_not_of_the_work(doc):
    assert [m.group(0) for m in WORK_LOG.finditer(doc.read_text(encoding="utf-8"))] == []


def test_every_setting_is_in_env_example_and_the_contract():
    env = (REPO / ".env.example").read_text(encoding="utf-8")
    contract = contract_tables.DOC.read_text(encoding="utf-8")
    for name in Settings.model_fields:
        env_name = contract_tables.env_name(name)
        assert re.search(rf"^(# )?{env_name}=", env, re.M), f"{env_name} missing from .env.example"
        assert f"`{env_name}`" in contract, f"{env_name} missing from docs/CONTRACT.md"


def test_env_example_values_are_the_defaults():
    env = (REPO / ".env.example").read_text(encoding="utf-8")
    defaults = {contract_tables.env_name(n): contract_tables.setting_default(n, f) for n, f in Settings.model_fields.items()}
    values = dict(re.findall(r"^([A-Z0-9_]+)=(.*)$", env, re.M))
    assert values and all(values[name] == defaults[name] for name in values)
    assert Settings(_env_file=None, **{k.lower(): v for k, v in values.items()}).model_dump() == \
        Settings(_env_file=None).model_dump()


def test_every_error_code_is_in_the_contract():
    contract = contract_tables.DOC.read_text(encoding="utf-8")
    table = contract[contract.index("### 4.1 Error codes"):contract.index("## 5.")]
    codes = {cls.code for cls in vars(errors).values() if isinstance(cls, type) and issubclass(cls, errors.WorkerError)}
    documented = set(re.findall(r"^\| `([A-Z_]+)` \|", table, re.M))
    assert documented == codes


def test_readme_file_tree_matches_the_worker():
    """Every module of engine/ and adapters/, and every folder of gpu-worker/, is in the README's
    tree, and everything the tree names exists."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    tree = readme[readme.index("## How it is built"):]
    tree = tree[tree.index("```\n") + 4:]
    tree = tree[:tree.index("```")]
    worker = REPO / "gpu-worker"
    wanted = {p.name for folder in ("engine", "adapters") for p in (worker / folder).iterdir()
              if (p.suffix == ".py" and p.name != "__init__.py") or (p.is_dir() and p.name != "__pycache__")}
    wanted |= {f"{p.name}/" for p in worker.iterdir() if p.is_dir() and not p.name.startswith((".", "__"))
               and p.name not in {"bench/out"}}
    named = set(re.findall(r"^\s+([\w.]+/?)\s", tree, re.M))
    missing = {w for w in wanted if w not in named and w.rstrip("/") not in named and f"{w}/" not in named}
    assert missing == set(), f"README tree lacks {sorted(missing)}"
    for line in re.findall(r"^  (\w[\w.]*/?)\s", tree.split("\ndocs/")[0], re.M):  # gpu-worker's own entries
        assert (worker / line).exists(), f"README tree names gpu-worker/{line}, which does not exist"


def test_before_after_picture_runs_the_sample_job(tmp_path):
    from PIL import Image

    from scripts import before_after

    out = tmp_path / "ba.jpg"
    assert before_after.main(["--size", "160", "120", "--width", "328", "--out", str(out)]) == 0
    with Image.open(out) as picture:
        assert picture.format == "JPEG" and picture.width == 328
        pixels = np.asarray(picture.convert("RGB")).astype(int)
    before, after = pixels[:, :160], pixels[:, 168:]
    changed = np.abs(before - after).max(axis=2) > 24
    assert 0.2 < changed.mean() < 0.9  # walls, floor, ceiling and the lamp change; the rest does not


def test_readme_test_command_is_what_ci_runs():
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert "cd gpu-worker" in ci and "python -m pytest -q" in ci
    assert "cd gpu-worker && python -m pytest -q" in readme
