"""The course's picture of the InstructGPT pipeline (Ouyang et al. 2022, Figure 2) in the toy world.

Drawn by code so that it stays in step with the course: `draw_pipeline()` returns the figure
that notebook 1 displays, and `python -m rlhf_lite.diagram` writes it to docs/pipeline.png for
the README (tests/test_diagram.py checks that the committed picture is what this code draws).
The gold labeler sits apart, at the bottom: it ranks the reward model's comparisons and judges
the final evaluation, but PPO never sees it, which is what lets the course measure
over-optimisation of the reward model.
"""
from __future__ import annotations

import sys
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

from .paths import REPO_ROOT

PNG = REPO_ROOT / "docs" / "pipeline.png"
DPI = 100  # small enough for the README, sharp enough to read
SIZE = (12.0, 6.6)  # inches; the drawing's coordinates are the same numbers

# name: (x, y) of the centre, width, text, colour. Data on the left, models in the middle,
# the evaluation on the right, the hidden judge below everything.
BOXES = {
    "web": ((1.35, 5.2), 2.3, "web text\n(the toy world's corpus)", "#e8eef7"),
    "demos": ((1.35, 3.4), 2.3, "demonstrations\nby imperfect labelers", "#e8eef7"),
    "rankings": ((1.35, 1.6), 2.3, "rankings of K samples\nof the SFT policy", "#e8eef7"),
    "base": ((4.4, 5.2), 2.4, "1. pretraining\nbase GPT (next token)", "#fdf1d8"),
    "sft": ((4.4, 3.4), 2.4, "2. supervised\nfine-tuning (SFT)", "#fdf1d8"),
    "rm": ((4.4, 1.6), 2.4, "3. reward model\n(Bradley-Terry)", "#fdf1d8"),
    "ppo": ((8.0, 3.4), 2.7, "4. PPO against the RM\nreward - beta KL(policy || SFT)",
            "#fde2d8"),
    "eval": ((11.0, 3.4), 1.7, "5. evaluation\nwin rate vs SFT", "#e3f2e1"),
    "gold": ((6.2, 0.35), 4.4, "hidden gold labeler: a score out of 10", "#eeeeee"),
}
HEIGHT = 0.9  # every box but the labeler's
ARROWS = [  # (from, to, label, where the label goes relative to the arrow's middle)
    ("web", "base", "", (0, 0)),
    ("base", "sft", "init", (0.3, 0)),
    ("demos", "sft", "", (0, 0)),
    ("sft", "rankings", "K samples", (-0.2, 0.25)),
    ("rankings", "rm", "", (0, 0)),
    ("sft", "ppo", "init,\nKL reference", (0, 0.35)),
    ("rm", "ppo", "reward", (0.25, -0.2)),
    ("ppo", "eval", "policy", (0, 0.25)),
]


def _edge(name: str, toward: tuple[float, float]) -> tuple[float, float]:
    """The point where the line from box `name`'s centre toward `toward` leaves the box, so
    that arrows start and end at the boxes' edges."""
    (x, y), width, *_ = BOXES[name]
    dx, dy = toward[0] - x, toward[1] - y
    height = 0.5 if name == "gold" else HEIGHT
    scale = min(width / 2 / abs(dx) if dx else float("inf"),
                height / 2 / abs(dy) if dy else float("inf"))
    return x + dx * scale, y + dy * scale


def _arrow(ax, start, end, **style) -> None:
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=14,
                                 linewidth=1.4, color=style.pop("color", "#333333"), **style))


def draw_pipeline() -> Figure:
    """The pipeline as a matplotlib Figure (Agg canvas, no pyplot state): demonstrations train
    SFT, the gold labeler's rankings of K SFT samples train the reward model, PPO maximises the
    reward model's score with a KL penalty to SFT (PPO-ptx adds a pretraining term), and the
    gold labeler, never seen by PPO, judges the evaluation."""
    fig = Figure(figsize=SIZE, dpi=DPI)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set(xlim=(0, SIZE[0]), ylim=(-0.1, SIZE[1] - 0.1))
    ax.axis("off")
    ax.text(6.0, 6.2, "The InstructGPT pipeline in the toy world", ha="center",
            fontsize=15, weight="bold")
    for name, ((x, y), width, text, colour) in BOXES.items():
        height = 0.5 if name == "gold" else HEIGHT
        ax.add_patch(FancyBboxPatch((x - width / 2, y - height / 2), width, height,
                                    boxstyle="round,pad=0.05", facecolor=colour,
                                    edgecolor="#555555", linestyle="--" if name == "gold" else "-"))
        ax.text(x, y, text, ha="center", va="center", fontsize=10.5)
    for start, end, label, (lx, ly) in ARROWS:
        a, b = BOXES[start][0], BOXES[end][0]
        p, q = _edge(start, b), _edge(end, a)
        _arrow(ax, p, q)
        if label:
            ax.text((p[0] + q[0]) / 2 + lx, (p[1] + q[1]) / 2 + ly, label, ha="center",
                    va="center", fontsize=9.5, style="italic")
    # PPO-ptx: the pretraining loss on web text, routed above the pretraining box
    ptx = "#b5651d"
    top = 5.2 + HEIGHT / 2
    ax.plot([1.35, 1.35, 8.0], [top + 0.05, 5.85, 5.85], color=ptx, linewidth=1.4,
            linestyle="--")
    _arrow(ax, (8.0, 5.85), (8.0, 3.4 + HEIGHT / 2 + 0.05), color=ptx, linestyle="--")
    ax.text(8.1, 4.6, "PPO-ptx: + gamma x\npretraining loss", ha="left", va="center",
            fontsize=9.5, color=ptx)
    # the gold labeler ranks the comparisons and judges the evaluation; PPO never sees it
    grey = "#777777"
    _arrow(ax, (3.95, 0.35), (1.35, 1.6 - HEIGHT / 2 - 0.05), color=grey, linestyle="--")
    ax.text(2.3, 0.6, "ranks", ha="center", va="center", fontsize=9.5, color=grey,
            style="italic")
    _arrow(ax, (8.45, 0.35), (11.0, 3.4 - HEIGHT / 2 - 0.05), color=grey, linestyle="--")
    ax.text(10.25, 1.5, "judges", ha="center", va="center", fontsize=9.5, color=grey,
            style="italic")
    ax.text(8.0, 2.55, "never sees the gold labeler", ha="center", va="center", fontsize=9.5,
            color="#b00020")
    return fig


def main(path: Path = PNG) -> Path:
    """Write the picture to `path` (the README's docs/pipeline.png)."""
    draw_pipeline().savefig(path, dpi=DPI)
    return path


if __name__ == "__main__":
    print(f"wrote {main(Path(sys.argv[1]) if len(sys.argv) > 1 else PNG)}")
