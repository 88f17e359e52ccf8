"""The user documentation (README.md, docs/*.md): generated tables up to date, the README's opening commands,
its length, no commit hashes or paths outside the repository, and relative links that resolve."""

from __future__ import annotations

import importlib.util
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = [README, *sorted((ROOT / "docs").glob("*.md"))]
# CI (.ci/run) runs the README's test command: these lines must stay byte-identical.
INSTALL_AND_RUN = (
    "python3 -m venv .venv && .venv/bin/pip install -r requirements.txt && "
    ".venv/bin/python experiments/cifar10_search.py --preset smoke"
)
TEST_COMMAND = ".venv/bin/python -m pytest -q -n 2 --dist loadfile"
# 7-40 hex digits with at least one digit and one letter, not part of a longer word or number.
HEX = re.compile(r"(?<![0-9A-Za-z])(?=[0-9a-f]*[0-9])(?=[0-9a-f]*[a-f])[0-9a-f]{7,40}(?![0-9A-Za-z])")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6} (.+)$", re.MULTILINE)


def _render_tables():
    spec = importlib.util.spec_from_file_location("render_tables", ROOT / "benchmarks" / "render_tables.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_tables_are_up_to_date():
    stale = _render_tables().stale_blocks()
    assert not stale, f"stale generated blocks (run python benchmarks/render_tables.py): {stale}"


def test_the_readme_method_table_covers_every_method():
    """Every ``--method`` has a row, each with its measured setting and a verdict against the initial logits."""
    from asose_jax.search.methods import METHODS

    render_tables = _render_tables()
    assert set(render_tables.METHOD_GRIDS) == set(METHODS)
    table = [line for line in render_tables.RENDERERS["nb201_methods"]().splitlines() if line.startswith("|")]
    rows = [row.split("|")[1:-1] for row in table[2:]]  # after the header and its rule
    assert [cells[0].strip(" `") for cells in rows] == list(render_tables.METHOD_GRIDS)
    assert all(cells[-1].strip() for cells in rows)  # each with its verdict


def test_a_selection_row_names_its_cycles_and_growth():
    """The selection table's words for a run come from its settings: cycles, depth growth, method, shrinking,
    selection."""
    render_tables = _render_tables()
    search = {"depth": 1, "sampler": "softmax", "arch_regularizer": "beta", "arch_reg_weight": 5.0, "arch_lr": 3e-3}
    config = {"warmup_epochs": 1, "arch_epochs": 1, "cycles": 4, "grow_at": "1:depth,2:depth,3:depth",
              "search": search, "selection": "perturbation", "selection_measure": "removal",
              "selection_images": 1024, "selection_tune_steps": 0}  # fmt: skip
    assert render_tables._setting(config) == (
        "4 cycles of 1 warm-up + 1 architecture epochs, growing from 1 to 2 cells per stage (`softmax` + beta 5, "
        "arch lr 0.003); perturbation selection, removal on 1,024 images, 0 tuning steps per edge"
    )
    once = {**config, "cycles": 2, "grow_at": "1:depth", "arch_epochs": 0, "selection": "argmax"}
    assert (
        render_tables._setting(once) == "2 cycles of 1 warm-up + 0 architecture epochs, growing from 1 to 1-2 "
        "cells per stage; argmax of the logits"
    )
    shrunk = {**config, "grow_at": "", "shrink_ops": 1, "shrink_measure": "weight", "selection": "argmax"}
    assert render_tables._setting(shrunk) == (
        "4 cycles of 1 warm-up + 1 architecture epochs (`softmax` + beta 5, arch lr 0.003), each edge dropping 1 op "
        "by weight after cycles 1-3; argmax of the logits"
    )
    deep = {**once, "cycles": 1, "grow_at": "", "search": {**search, "depth": 5}}
    assert (
        render_tables._setting(deep) == "1 warm-up + 0 architecture epochs at 5 cells per stage; argmax of the logits"
    )


def test_a_stale_block_is_found(tmp_path):
    render_tables = _render_tables()
    page = tmp_path / "page.md"
    page.write_text("<!-- BEGIN generated:checkpoint_cost -->\nold\n<!-- END generated:checkpoint_cost -->\n")
    assert render_tables.stale_blocks([page]) == [f"{page}: checkpoint_cost"]
    page.write_text(render_tables.render_text(page.read_text()))
    assert render_tables.stale_blocks([page]) == []


def test_readme_opens_with_the_two_commands_and_is_short():
    lines = README.read_text().splitlines()
    assert len(lines) <= 300, f"README.md has {len(lines)} lines"
    assert lines[0].startswith("# ")
    body = [line.strip() for line in lines[1:] if line.strip()]
    assert INSTALL_AND_RUN in body[:3], "the install-and-run command comes right after the title and a line or two"
    start = body.index(INSTALL_AND_RUN)
    assert TEST_COMMAND in body[start + 1 : start + 3], "the test command follows the install-and-run command"


@pytest.mark.parametrize("page", DOCS, ids=lambda p: p.name)
def test_no_commit_hashes_or_paths_outside_the_repository(page):
    text = page.read_text()
    assert not HEX.findall(text), f"commit-hash-like strings in {page.name}: {HEX.findall(text)}"
    assert "../shared" not in text


def _anchors(page: pathlib.Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    headings = HEADING.findall(page.read_text())
    return {re.sub(r"[^\w\- ]", "", h.replace("`", "").lower()).replace(" ", "-") for h in headings}


@pytest.mark.parametrize("page", DOCS, ids=lambda p: p.name)
def test_relative_links_resolve(page):
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.DOTALL)
    broken = []
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.exists() or anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved):
            broken.append(target)
    assert not broken, f"links in {page.name} that point nowhere: {broken}"
