"""The documentation as a reader meets it: every link resolves inside the repository, no doc points at notes
outside it, and the README's training-loop snippet runs as written from a fresh clone's root."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, markup and punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]{2,}|`", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)
    return {slug(m.group(1)) for m in re.finditer(r"^#+\s+(.*)$", text, flags=re.M)}


def links(path: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)
    return [a or b for a, b in LINK.findall(text)]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_link_resolves_inside_the_repository(doc):
    broken = []
    for target in links(doc):
        if re.match(r"[a-z]+://|mailto:", target):
            continue
        file, _, anchor = target.partition("#")
        path = (doc.parent / file).resolve() if file else doc
        if not path.exists() or ROOT.resolve() not in path.parents and path != ROOT.resolve():
            broken.append(f"{target} (no such file in the repository)")
        elif anchor and path.suffix == ".md" and anchor not in anchors(path):
            broken.append(f"{target} (no heading #{anchor} in {path.name})")
    assert not broken, broken


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_doc_cites_notes_outside_the_repository(doc):
    text = doc.read_text(encoding="utf-8")
    assert "shared/reference" not in text and "../shared" not in text


def test_the_slug_rule_on_headings_this_repository_uses():
    assert slug("Code written on `clock_driven`: the official spiking transformers") == \
        "code-written-on-clock_driven-the-official-spiking-transformers"
    assert slug("Fused neurons (issue #3)") == "fused-neurons-issue-3"


@pytest.mark.slow
def test_the_readme_training_loop_runs_as_written_from_the_repository_root(tmp_path):
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Use it in your training loop", 1)[1].split("\n##")[0]  # to ## or ###
    code = "".join(b.split("```", 1)[0] for b in section.split("```python\n")[1:])  # its blocks, in order
    assert "import torch, snn_lats, models" in code and "pruner.step()" in code
    # as a user pastes it into `python` in the clone's root: stdin, so the working directory is on sys.path
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([sys.executable, "-"], input=code, cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    threshold, l1 = map(float, lines[0].split())
    assert threshold == pytest.approx(0.08) and l1 > 0  # d reached D at the last step; λ reported
    total = lines[-1].split()
    assert total[0] == "total" and 0.3 < float(total[-1]) < 1  # the loop pruned
