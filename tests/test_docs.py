"""The documentation site: every Python block in docs/ runs, the API pages cover the public names, and
``mkdocs build --strict`` succeeds.

Code blocks are the fenced blocks that open with a line of exactly three backticks followed by ``python``, at the
start of a line. A page's blocks run in order in one namespace, in a temporary working directory. A block
directly preceded by the line ``<!-- skip-test -->`` is not run (only for blocks that need the real CIFAR-10, a
finished run or a GPU). A block identical to the README's usage example is not run again here: it is compared
with the README instead, and ``tests/test_readme.py`` runs it.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
README = REPO / "README.md"
SKIP_MARK = "<!-- skip-test -->"
FENCE = re.compile(r"^```python[ \t]*$")


@dataclass(frozen=True)
class Block:
    line: int  # 1-based line of the opening fence
    code: str
    skip: bool


def python_blocks(text: str) -> list[Block]:
    """The top-level ```python blocks of a Markdown text, each with its skip flag."""
    lines = text.splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        if FENCE.match(lines[i]):
            start = i
            i += 1
            body: list[str] = []
            while i < len(lines) and lines[i].rstrip() != "```":
                body.append(lines[i])
                i += 1
            if i == len(lines):
                raise ValueError(f"unclosed ```python block opened at line {start + 1}")
            previous = next((lines[j].strip() for j in range(start - 1, -1, -1) if lines[j].strip()), "")
            blocks.append(Block(start + 1, "\n".join(body) + "\n", previous == SKIP_MARK))
        i += 1
    return blocks


def readme_example() -> str:
    (example,) = [b.code for b in python_blocks(README.read_text())]
    return example


def pages_with_code() -> list[Path]:
    return [p for p in sorted(DOCS.rglob("*.md")) if python_blocks(p.read_text())]


def test_block_extraction_honours_the_skip_marker() -> None:
    text = "\n".join(
        [
            "intro",
            "",
            "```python",
            "x = 1",
            "```",
            "",
            SKIP_MARK,
            "",
            "```python",
            "raise SystemExit",
            "```",
            "",
            "```bash",
            "ls",
            "```",
            "",
        ]
    )
    blocks = python_blocks(text)
    assert [(b.line, b.code, b.skip) for b in blocks] == [(3, "x = 1\n", False), (9, "raise SystemExit\n", True)]


def test_getting_started_holds_the_readme_example_verbatim() -> None:
    codes = [b.code for b in python_blocks((DOCS / "getting-started.md").read_text())]
    assert readme_example() in codes


def test_skip_marker_is_used_sparingly() -> None:
    blocks = [b for p in pages_with_code() for b in python_blocks(p.read_text())]
    skipped = [b for b in blocks if b.skip]
    assert len(skipped) <= max(2, len(blocks) // 5), "most documented code must run"


@pytest.mark.parametrize("page", pages_with_code(), ids=lambda p: str(p.relative_to(DOCS)))
def test_python_blocks_run(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # files the examples write land here
    monkeypatch.setenv("MPLBACKEND", "Agg")
    torch.manual_seed(0)
    namespace: dict[str, object] = {"__name__": "__docs__"}
    readme = readme_example()
    ran = 0
    started = time.perf_counter()
    # The examples are tiny: one thread is fastest, and on a shared CPU two threads can be many times slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for block in python_blocks(page.read_text()):
            if block.skip or block.code == readme:
                continue
            where = f"{page.relative_to(REPO)}:{block.line}"
            try:
                exec(compile(block.code, where, "exec"), namespace)
            except Exception as error:
                raise AssertionError(f"the ```python block at {where} failed: {error!r}") from error
            ran += 1
    finally:
        torch.set_num_threads(threads)
    print(f"{page.relative_to(REPO)}: {ran} blocks in {time.perf_counter() - started:.1f} s")


def _documented_objects() -> set[str]:
    paths: set[str] = set()
    for page in sorted((DOCS / "api").glob("*.md")):
        paths.update(re.findall(r"^::: ([\w.]+)\s*$", page.read_text(), flags=re.M))
    return paths


def test_api_pages_document_every_public_name() -> None:
    import hmdc_modules

    documented = {path.rsplit(".", 1)[-1] for path in _documented_objects()}
    missing = sorted(set(hmdc_modules.__all__) - documented - {"__version__"})
    assert not missing, f"public names without an API entry: {missing}"


def test_api_pages_point_at_importable_objects() -> None:
    import importlib

    for path in sorted(_documented_objects()):
        module_name, _, attribute = path.rpartition(".")
        module = importlib.import_module(module_name)
        assert hasattr(module, attribute), f"`::: {path}` names no object"


def _missing_docs_tools() -> list[str]:
    return [
        name
        for name in ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers")
        if importlib.util.find_spec(name) is None
    ]


def test_mkdocs_build_strict(tmp_path: Path) -> None:
    missing = _missing_docs_tools()
    if missing:
        pytest.skip(f"the docs tools are not installed ({', '.join(missing)}): pip install -e '.[docs]'")
    site = tmp_path / "site"
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stdout}\n{result.stderr}"

    page = (site / "api" / "balancer.html").read_text()
    assert 'id="hmdc_modules.balancer.GradientBalancer"' in page  # the class heading
    assert "doc-signature" in page  # its signature
    assert ">Examples:<" in page and 'class="example"' not in page  # doctests rendered as code, not prose
    assert "<summary>Shape</summary>" in page  # the Shape: section
    assert 'class="arithmatex"' in page  # math handed to MathJax, not left as raw $...$
    assert "assets/mathjax/tex-mml-chtml.js" in page  # MathJax from the site itself
    for html in site.rglob("*.html"):
        text = html.read_text()
        for host in ("cdn.jsdelivr.net", "unpkg.com", "fonts.googleapis.com", "polyfill.io"):
            assert host not in text, f"{html.relative_to(site)} loads from {host}"


def test_home_page_quotes_the_command_that_regenerates_its_figures() -> None:
    script = (REPO / "scripts" / "docs_figures.py").read_text()
    args = re.search(r'RUN_ARGS = \(\n\s*"(.*?)"\n\s*"(.*?)"\n\)', script, flags=re.S)
    assert args, "scripts/docs_figures.py lost its RUN_ARGS"
    quoted = " ".join(part.strip() for part in args.groups())
    home = (DOCS / "index.md").read_text()
    assert f"python examples/hmdc_cifar10.py {quoted}" in home
