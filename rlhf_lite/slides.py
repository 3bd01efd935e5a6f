"""Slide types for presenting the notebooks (RISE, docs/teaching.md "Presenting").

Every cell carries `metadata.slideshow.slide_type`, set by one rule from the notebook's own
structure so that it stays right when cells change: `python -m rlhf_lite.slides` rewrites it in
every notebook, after splitting any Markdown cell at a heading that is not its first line (a
section must start a cell to start a slide); it touches nothing else, and tests/test_repo.py
checks that each cell holds what the rule says. The rule, first match wins:

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
import re
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


HEADING = re.compile(r"#{1,3} ")  # the levels that start a slide or a subslide


def inner_headings(lines: list[str]) -> list[int]:
    """Indices of the heading lines of a Markdown source after its first line, outside code
    fences (a `# comment` in a fenced snippet is no heading)."""
    starts, fenced = [], False
    for i, line in enumerate(lines):
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif i and not fenced and HEADING.match(line):
            starts.append(i)
    return starts


def split_sections(cell: dict) -> list[dict]:
    """A Markdown cell cut before each of its inner headings: one cell per section (the
    later pieces get ids derived from the cell's own)."""
    if cell["cell_type"] != "markdown":
        return [cell]
    lines = "".join(cell["source"]).splitlines(keepends=True)
    cuts = [0, *inner_headings(lines), len(lines)]
    if len(cuts) == 2:
        return [cell]
    pieces = []
    for k, (start, end) in enumerate(zip(cuts, cuts[1:])):
        source = lines[start:end]
        while source and not source[-1].strip():  # the blank line before the next heading
            source = source[:-1]
        source[-1] = source[-1].rstrip("\n")
        piece = {**cell, "source": source}
        if k and "id" in cell:
            piece["id"] = f"{cell['id'][:60]}-{k}"
        pieces.append(piece)
    return pieces


def tag(path: Path) -> bool:
    """Split the notebook at `path` into one Markdown cell per section and write the rule's
    slide types into it; True if anything changed."""
    text = path.read_text()
    notebook = json.loads(text)
    notebook["cells"] = cells = [piece for cell in notebook["cells"]
                                 for piece in split_sections(cell)]
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
