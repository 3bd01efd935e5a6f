"""Slide types for presenting the notebooks (RISE, docs/teaching.md "Presenting").

Every cell carries `metadata.slideshow.slide_type`, set by one rule from the notebook's own
structure so that it stays right when cells change: `python -m rlhf_lite.slides` rewrites it in
every notebook (and touches nothing else), and tests/test_repo.py checks that each cell holds
what the rule says. The rule, first match wins:

- the first cell (title and objectives) and every `#`/`##` heading cell: "slide";
  a `###` heading cell: "subslide";
- the first code cell (imports, threads, switches: run before class) and cells that hold
  nothing but `assert` statements (CI's checks): "skip";
- a code cell with a figure or more than LONG_OUTPUT lines of output: "subslide" of its own;
- a Markdown cell after a code cell, or one that opens with a bold lead (`**Exercise 2...**`),
  starts the next idea: "subslide";
- a code cell right after another code cell checks or extends it: "fragment" (reveal, then
  check);
- anything else continues its slide: "-".
"""
from __future__ import annotations

import ast
import json
from pathlib import Path

from .paths import REPO_ROOT

LONG_OUTPUT = 15  # lines of text output that no longer fit under the code on a 1280x800 slide


def output_lines(cell: dict) -> tuple[int, bool]:
    """(lines of text, whether a figure) in a code cell's committed outputs."""
    lines, figure = 0, False
    for output in cell.get("outputs", []):
        data = output.get("data", {})
        figure |= "image/png" in data or "image/svg+xml" in data
        text = output.get("text", data.get("text/plain", ""))
        lines += len("".join(text).splitlines())
    return lines, figure


def only_asserts(source: str) -> bool:
    try:
        body = ast.parse(source).body
    except SyntaxError:  # IPython magics: not a check cell
        return False
    return bool(body) and all(isinstance(node, ast.Assert) for node in body)


def slide_type(cells: list[dict], i: int) -> str:
    """The slide type of cells[i] under the module docstring's rule."""
    cell, source = cells[i], "".join(cells[i]["source"]).lstrip()
    previous = cells[i - 1]["cell_type"] if i else None
    if cell["cell_type"] == "markdown":
        if i == 0 or source.startswith(("# ", "## ")):
            return "slide"
        new_idea = source.startswith(("### ", "**")) or previous == "code"
        return "subslide" if new_idea else "-"
    first_code = next(j for j, c in enumerate(cells) if c["cell_type"] == "code")
    if i == first_code or only_asserts(source):
        return "skip"
    lines, figure = output_lines(cell)
    if figure or lines > LONG_OUTPUT:
        return "subslide"
    return "fragment" if previous == "code" else "-"


def tag(path: Path) -> bool:
    """Write the rule's slide types into the notebook at `path`; True if anything changed."""
    text = path.read_text()
    notebook = json.loads(text)
    cells = notebook["cells"]
    for i, cell in enumerate(cells):
        slideshow = {"slide_type": slide_type(cells, i)}
        cell["metadata"] = dict(sorted({**cell["metadata"], "slideshow": slideshow}.items()))
    new = json.dumps(notebook, indent=1, ensure_ascii=False) + "\n"  # Jupyter's own layout
    if new != text:
        path.write_text(new)
    return new != text


def notebooks() -> list[Path]:
    """The course's notebooks and their solutions (not Jupyter's checkpoint copies)."""
    return sorted(p for p in (REPO_ROOT / "notebooks").rglob("*.ipynb")
                  if ".ipynb_checkpoints" not in p.parts)


if __name__ == "__main__":
    for path in notebooks():
        if tag(path):
            print(f"slide types written: {path.relative_to(REPO_ROOT)}")
