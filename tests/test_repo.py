"""Repository contracts: pinned environments agree, the package imports light, notebooks are
clean."""
import ast
import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def pins(lines):
    return {m.group(1).lower(): m.group(2) for line in lines
            if (m := re.match(r"^\s*(?:-\s+)?([A-Za-z0-9_.\-]+)==([^\s#]+)", line))}


def test_environment_yml_pins_the_same_versions_as_requirements():
    req = pins((ROOT / "requirements.txt").read_text().splitlines())
    env = pins((ROOT / "environment.yml").read_text().splitlines())
    assert req["torch"] == "2.13.0"
    assert req == env
    assert "-e ." in (ROOT / "requirements.txt").read_text()


def test_package_imports_without_transformers_or_datasets():
    code = ("import sys, rlhf_lite, rlhf_lite.model, rlhf_lite.generation, rlhf_lite.training, "
            "rlhf_lite.world, rlhf_lite.labeler, rlhf_lite.data, rlhf_lite.pretrain, "
            "rlhf_lite.artifacts, rlhf_lite.evaluation, rlhf_lite.tokenizer; "
            "print([m for m in ('transformers', 'datasets', 'pandas') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_notebooks_state_objectives_and_runtime_and_hold_no_errors():
    notebooks = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert notebooks, "no notebooks found"
    for path in notebooks:
        cells = json.loads(path.read_text())["cells"]
        first = "".join(cells[0]["source"]).lower()
        assert "objectives" in first and "runtime" in first, path.name
        errors = [o for c in cells for o in c.get("outputs", []) if o["output_type"] == "error"]
        assert not errors, f"{path.name} has committed error outputs"


def test_nbval_options_are_cell_tags_that_nbval_honours():
    """nbval options live in cell tags, not in `# NBVAL_...` comment lines that a slide would
    show. A misspelt tag would silently leave a cell unchecked, so every nbval-like tag must be
    one of the tag names the pinned nbval reads."""
    from nbval.plugin import metadata_tags

    markers, unknown = [], []
    for path in sorted((ROOT / "notebooks").rglob("*.ipynb")):
        for i, cell in enumerate(json.loads(path.read_text())["cells"]):
            if cell["cell_type"] != "code":
                continue
            where = f"{path.relative_to(ROOT)} cell {i}"
            markers += [f"{where}: {line.strip()}" for line in cell["source"]
                        if re.match(r"\s*#+\s*NBVAL", line, re.IGNORECASE)]
            unknown += [f"{where}: {tag}" for tag in cell["metadata"].get("tags", [])
                        if "nbval" in tag.lower() and tag not in metadata_tags]
    assert not markers, "comment markers (make them cell tags):\n" + "\n".join(markers)
    assert not unknown, "tags nbval ignores:\n" + "\n".join(unknown)



def test_slide_types_follow_their_rule():
    """RISE presents each cell as its metadata.slideshow says; rlhf_lite.slides derives that from
    the notebook's structure, so a cell added, moved or re-executed without it shows up here."""
    from rlhf_lite import slides

    stale = []
    for path in slides.notebooks():
        cells = json.loads(path.read_text())["cells"]
        assert cells[0]["metadata"]["slideshow"]["slide_type"] == "slide", path.name  # the title
        stale += [f"{path.relative_to(ROOT)} cell {i}: {have} where the rule says {want}"
                  for i, cell in enumerate(cells)
                  if (have := cell["metadata"].get("slideshow", {}).get("slide_type"))
                  != (want := slides.slide_type(cells, i))]
    assert not stale, "run python -m rlhf_lite.slides:\n" + "\n".join(stale)


def test_each_heading_starts_its_own_markdown_cell():
    """A heading inside a cell would put its section on the slide of the section before."""
    from rlhf_lite import slides

    inner = [f"{path.relative_to(ROOT)} cell {i}" for path in slides.notebooks()
             for i, cell in enumerate(json.loads(path.read_text())["cells"])
             if len(slides.split_sections(cell)) > 1]
    assert not inner, "run python -m rlhf_lite.slides to split:\n" + "\n".join(inner)


def test_split_sections_cuts_before_headings_outside_code_fences():
    from rlhf_lite.slides import split_sections

    cell = {"cell_type": "markdown", "id": "c1", "metadata": {},
            "source": ["# Title\n", "text\n", "\n", "## Section\n", "```python\n",
                       "# a comment\n", "```\n", "### Sub\n", "end"]}
    pieces = split_sections(cell)
    assert [p["source"] for p in pieces] == [
        ["# Title\n", "text"], ["## Section\n", "```python\n", "# a comment\n", "```"],
        ["### Sub\n", "end"]]
    assert [p["id"] for p in pieces] == ["c1", "c1-1", "c1-2"]
    assert split_sections(pieces[1]) == [pieces[1]]

def test_slide_type_rule_on_a_small_notebook():
    from rlhf_lite.slides import slide_type

    def cell(kind, source, outputs=()):
        return {"cell_type": kind, "source": source, "metadata": {}, "outputs": list(outputs)}

    figure = {"output_type": "display_data", "data": {"image/png": "", "text/plain": "<Figure>"}}
    cells = [cell("markdown", "# Title\nobjectives"), cell("code", "import torch"),
             cell("markdown", "## A section"), cell("code", "x = 1"), cell("code", "print(x)"),
             cell("code", "assert x == 1  # CI's check"), cell("markdown", "Next idea"),
             cell("code", "plot()", [figure]), cell("markdown", "**Exercise 1**"),
             cell("markdown", "more text"), cell("code", "%matplotlib inline\nassert True")]
    assert [slide_type(cells, i) for i in range(len(cells))] == [
        "slide", "skip", "slide", "-", "fragment", "skip", "subslide", "subslide", "subslide", "-",
        "-"]  # a magic line: not a pure check

def package_imports(package: Path = ROOT / "rlhf_lite") -> dict[str, set[str]]:
    """module -> the package modules it imports (at any depth, function-level imports too).
    A subpackage's modules are named by their dotted path ("realdata.source"), the subpackage
    itself by its name ("realdata": its __init__)."""
    def dotted(path: Path) -> str:
        return ".".join(path.relative_to(package).with_suffix("").parts).removesuffix(".__init__")

    names = {dotted(p) for p in package.rglob("*.py")}
    graph = {}
    for path in sorted(package.rglob("*.py")):
        folder = path.relative_to(package).parent.parts  # where "from ." points
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level:  # from . / from .. : relative to this file's folder
                    base = folder[:len(folder) - node.level + 1]
                    module = ".".join([*base, *([node.module] if node.module else [])])
                elif (node.module or "").startswith(package.name):
                    module = node.module.removeprefix(package.name).lstrip(".")
                else:
                    continue
                # `from .realdata import gold_eval` imports a module, `from .x import f` only x
                found = {f"{module}.{a.name}".lstrip(".") for a in node.names} & names
                imported |= found or {module}
            elif isinstance(node, ast.Import):
                imported |= {a.name.removeprefix(f"{package.name}.") for a in node.names
                             if a.name.startswith(f"{package.name}.")}
        graph[dotted(path)] = imported - {dotted(path), "__init__", ""}
    graph.pop("__init__", None)  # the package's own __init__.py
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of `graph` as a path [a, b, ..., a], or None."""
    state = {}  # module -> "open" while on the DFS path, "done" after

    def visit(module, path):
        state[module] = "open"
        for dep in sorted(graph.get(module, ())):
            if state.get(dep) == "open":
                return path[path.index(dep):] + [dep] if dep in path else path + [dep]
            if dep not in state and (cycle := visit(dep, path + [dep])):
                return cycle
        state[module] = "done"
        return None

    for module in sorted(graph):
        if module not in state and (cycle := visit(module, [module])):
            return cycle
    return None


def test_find_cycle_finds_a_circle_and_only_a_circle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_the_package_has_no_import_circle():
    graph = package_imports()
    assert {"evaluation", "reward", "stages", "artifacts"} <= set(graph)
    assert "labeler" in graph["evaluation"] and "batching" in graph["reward"]  # the walk works
    assert find_cycle(graph) is None, f"import circle: {' -> '.join(find_cycle(graph))}"


# The package's layers, from the bottom (CONTRIBUTING.md, "How the package fits together"): a
# module imports only from its own layer and the layers below it. realdata, the real preference
# data (a subpackage), sits with the stages it feeds, but for its evaluation (gold_eval).
LAYERS = {
    "foundations": "utils paths data distributed precision checkpoints runs",
    "model and sampling": "model tokenizer chat generation batching hf",
    "the RL maths": "gae kl",
    "the toy world and the stages": "world labeler verifier comparisons datasource training "
                                    "pretrain sft reward ppo dpo realdata realdata.preference_data "
                                    "realdata.source",
    "presets, registry, artifacts": "presets stages artifacts",
    "pipeline and notebooks": "evaluation judges pipeline realdata.gold_eval widgets exercises "
                              "doctor diagram slides",
}
LAYER = {module: i for i, modules in enumerate(LAYERS.values()) for module in modules.split()}


def upward_imports(graph: dict[str, set[str]], layer: dict[str, int]) -> list[str]:
    """Each import of `graph` from a higher layer than the importer's, as "a -> b"."""
    return [f"{module} -> {dep}" for module, deps in sorted(graph.items())
            for dep in sorted(deps) if layer[dep] > layer[module]]


def test_upward_imports_finds_an_import_from_above_and_only_that():
    layer = {"a": 0, "b": 0, "c": 1}
    assert upward_imports({"a": {"b", "c"}, "b": set(), "c": {"a", "b"}}, layer) == ["a -> c"]


def test_a_subpackages_modules_are_named_and_their_relative_imports_resolved(tmp_path):
    package = tmp_path / "rlhf_lite"
    (package / "realdata").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "utils.py").write_text("")
    (package / "sft.py").write_text("")
    (package / "presets.py").write_text("from .realdata.gold import x\nfrom . import utils\n")
    (package / "realdata" / "__init__.py").write_text("from .gold import x\n")
    (package / "realdata" / "gold.py").write_text("from ..utils import y\nfrom .. import sft\n"
                                                  "import rlhf_lite.model\nfrom . import gold\n")
    assert package_imports(package) == {
        "utils": set(), "sft": set(), "presets": {"realdata.gold", "utils"},
        "realdata": {"realdata.gold"},
        "realdata.gold": {"utils", "sft", "model"}}


def test_every_module_has_a_layer_and_imports_only_from_its_own_or_below():
    graph = package_imports()
    assert not set(graph) - set(LAYER), f"modules without a layer: {set(graph) - set(LAYER)}"
    upward = upward_imports(graph, LAYER)
    assert not upward, f"imports from a layer above the importer's: {upward}"


LINK = re.compile(r"\]\(([^)\s]+)\)")  # a Markdown link's target


def heading_slugs(markdown: str) -> set[str]:
    """GitHub's anchors of a Markdown file's headings: lower case, punctuation dropped, spaces
    to hyphens."""
    return {re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
            for m in re.finditer(r"^#+ (.+)$", markdown, re.MULTILINE)}


def test_heading_slugs_follow_githubs_rule():
    assert heading_slugs("# A b\n## On a GPU (Colab and the like)\ntext # not\n") == {
        "a-b", "on-a-gpu-colab-and-the-like"}


def test_relative_links_in_the_docs_reach_a_file_and_heading():
    sources = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md"))]
    notebooks = sorted((ROOT / "notebooks").rglob("*.ipynb"))
    texts = {p: p.read_text() for p in sources}
    texts |= {p: "\n".join("".join(c["source"]) for c in json.loads(p.read_text())["cells"]
                           if c["cell_type"] == "markdown") for p in notebooks}
    broken = []
    for path, text in texts.items():
        for target in LINK.findall(text):
            if re.match(r"[a-z]+:", target):
                continue  # a web address
            file, _, anchor = target.partition("#")
            linked = (path.parent / file).resolve() if file else path
            if not linked.exists():
                broken.append(f"{path.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and linked.suffix == ".md" and anchor not in heading_slugs(
                    linked.read_text()):
                broken.append(f"{path.relative_to(ROOT)}: {target} (no such heading)")
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_license_citation_and_changelog_agree_on_the_version():
    version = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(),
                        re.MULTILINE).group(1)
    cited = re.search(r"^version: (\S+)$", (ROOT / "CITATION.cff").read_text(), re.MULTILINE)
    newest = re.search(r"^## (\S+)", (ROOT / "CHANGELOG.md").read_text(), re.MULTILINE)
    assert cited.group(1) == newest.group(1) == version
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    readme = (ROOT / "README.md").read_text()
    assert "MIT" in readme and "CC BY 4.0" in readme  # code and prose, as the LICENSE section says
