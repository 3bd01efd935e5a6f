"""The pipeline picture: what it names, and that the committed PNG is what the code draws."""
import numpy as np
from matplotlib.image import imread

from rlhf_lite.diagram import DPI, PNG, draw_pipeline


def test_the_picture_names_every_step_and_the_hidden_labeler():
    fig = draw_pipeline()
    texts = " ".join(t.get_text() for t in fig.axes[0].texts)
    for label in ("web text", "demonstrations", "rankings of K samples", "1. pretraining",
                  "2. supervised", "3. reward model", "4. PPO against the RM",
                  "KL(policy || SFT)", "PPO-ptx", "5. evaluation", "hidden gold labeler",
                  "never sees the gold labeler", "ranks", "judges"):
        assert label in texts, label


def test_the_committed_png_is_what_draw_pipeline_draws():
    """Same size and the same pixels, up to a margin far below what one changed word costs
    (about 5e-4; matplotlib's wheels bring their own fonts and rasteriser, so a pinned
    version draws the same everywhere): after a change to the drawing,
    `python -m rlhf_lite.diagram` rewrites it."""
    fig = draw_pipeline()
    fig.canvas.draw()
    drawn = np.asarray(fig.canvas.buffer_rgba(), dtype=np.float32)[..., :3] / 255
    committed = imread(PNG)[..., :3]
    assert committed.shape == drawn.shape == (round(fig.get_figheight() * DPI),
                                              round(fig.get_figwidth() * DPI), 3)
    assert np.abs(committed - drawn).mean() < 1e-4
