"""The front door and the docs stay true: every link resolves, the README is short, its bundles table is what the
manifests say, and every committed file is one a Space accepts."""

import os
import re
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: str) -> set[str]:
    with open(path, encoding="utf-8") as f:
        return {slug(line.lstrip("#")) for line in f if line.startswith("#")}


def pages() -> list[str]:
    docs = os.path.join(ROOT, "docs")
    return [os.path.join(ROOT, "README.md")] + sorted(os.path.join(docs, f) for f in os.listdir(docs) if f.endswith(".md"))


@pytest.mark.parametrize("page", pages(), ids=lambda p: os.path.relpath(p, ROOT))
def test_every_link_resolves(page):
    with open(page, encoding="utf-8") as f:
        text = re.sub(r"```.*?```", "", f.read(), flags=re.S)  # code blocks hold no links
    broken = []
    for target in LINK.findall(text):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        path, _, anchor = target.partition("#")
        full = os.path.normpath(os.path.join(os.path.dirname(page), path)) if path else page
        if not os.path.exists(full):
            broken.append(f"{target}: no such file")
        elif anchor and full.endswith(".md") and anchor not in anchors(full):
            broken.append(f"{target}: no heading #{anchor}")
    assert not broken, broken


def test_the_readme_is_a_front_door():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        lines = f.read().splitlines()
    assert len(lines) <= 300, len(lines)
    assert lines[lines.index("```bash") + 1].startswith("make app") and lines[lines.index("```bash") + 2].startswith("make test")
    assert os.path.isfile(os.path.join(ROOT, "docs", "screenshot.png"))
    assert all(os.path.relpath(p, ROOT) in "\n".join(lines) for p in pages()[1:] if not p.endswith("README.md")), \
        "every docs page is linked from the README"


def test_the_readmes_bundles_table_is_what_the_manifests_say():
    from caption_core.formatting import bundles_table
    from training.__main__ import BUNDLES_BEGIN, BUNDLES_END

    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        text = f.read()
    shown = text.split(BUNDLES_BEGIN, 1)[1].split(BUNDLES_END, 1)[0].strip()
    assert shown == bundles_table(os.path.join(ROOT, "weights")), "rewrite it: python -m training table --write README.md"


def test_every_committed_file_is_under_10_mb_and_the_weights_under_70():
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split()
    sizes = {f: os.path.getsize(os.path.join(ROOT, f)) for f in files if os.path.isfile(os.path.join(ROOT, f))}
    assert not {f: s for f, s in sizes.items() if s >= 10 * 10**6}, "Hugging Face refuses these without LFS"
    assert sum(s for f, s in sizes.items() if f.startswith("weights/")) <= 70 * 2**20
