"""Explorers redraw when their controls move; the labeler widget writes exactly what the RM
reads."""
import base64
import copy
import html
import json

import matplotlib
import pytest
import torch

matplotlib.use("Agg")

from rlhf_lite import comparisons, data, reward, widgets  # noqa: E402
from rlhf_lite.gae import compute_gae  # noqa: E402
from rlhf_lite.model import GPT, GPTConfig  # noqa: E402
from rlhf_lite.tokenizer import load_tokenizer  # noqa: E402


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer()


@pytest.fixture(scope="module")
def tiny_policy(tokenizer):
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=len(tokenizer), block_size=64, n_layer=1, n_head=2,
                         n_embd=16)).eval()


def bar_heights(ax):
    return [p.get_height() for p in ax.patches]


def test_explorer_display_carries_the_widget_and_a_png_of_the_current_figure():
    explorer = widgets.GAEExplorer(torch.tensor([0.0, -0.5, 0.0, 2.0]),
                                   torch.tensor([1.0, 1.5, 1.0, 2.0]))
    bundle = explorer._repr_mimebundle_()
    assert (bundle["application/vnd.jupyter.widget-view+json"]["model_id"]
            == explorer.widget.model_id)
    png = base64.b64decode(bundle["image/png"])
    assert png.startswith(b"\x89PNG") and png == explorer.image.value


def test_gae_explorer_bars_are_compute_gae_and_follow_the_sliders():
    rewards, values = torch.tensor([0.0, -0.5, 0.0, 2.0]), torch.tensor([1.0, 1.5, 1.0, 2.0])
    explorer = widgets.GAEExplorer(rewards, values, lam=0.5, gamma=1.0)
    # the notebook's hand example
    assert bar_heights(explorer.fig.axes[0]) == [0.25, -0.5, 1.0, 0.0]
    before = explorer.image.value
    explorer.set(lam=1.0)
    expected, _ = compute_gae(rewards[None], values[None], torch.ones(1, 4), gamma=1.0, lam=1.0)
    assert bar_heights(explorer.fig.axes[0]) == pytest.approx(expected[0].tolist())
    # G_t - V_t by hand
    assert bar_heights(explorer.fig.axes[0]) == pytest.approx([0.5, 0.0, 1.0, 0.0])
    explorer.controls["gamma"].value = 0.5  # as a user's slider move does
    # lambda 1, gamma 0.5: G = [0 + 0.5 * 0, -0.5 + 0.5 * 1, 0 + 0.5 * 2, 2] = [0, 0, 1, 2];
    # A = G - V
    assert bar_heights(explorer.fig.axes[0]) == pytest.approx([-1.0, -1.5, 0.0, 0.0])
    assert explorer.image.value != before


def test_clipped_surrogate_explorer_matches_the_clip_by_hand_and_moves_with_epsilon_and_sign():
    explorer = widgets.ClippedSurrogateExplorer(clip_eps=0.2, advantage=1.0)
    ratios = explorer.ratios
    line = explorer.fig.axes[0].lines[1]  # [0] is the unclipped rho * A
    expected = torch.minimum(ratios, ratios.clamp(0.8, 1.2))  # A = 1
    assert torch.allclose(torch.tensor(line.get_ydata()), expected, atol=1e-6)
    explorer.set(clip_eps=0.4)
    assert max(explorer.fig.axes[0].lines[1].get_ydata()) == pytest.approx(1.4, abs=1e-6)
    explorer.set(advantage=-1.0)  # A < 0: flat (no gradient) below 1 - eps, unbounded above
    objective, clipped = explorer.objective(0.4, -1.0)
    assert torch.allclose(torch.tensor(explorer.fig.axes[0].lines[1].get_ydata()), objective)
    assert clipped[ratios < 0.59].all() and not clipped[ratios > 0.61].any()
    assert objective[ratios < 0.59].eq(-0.6).all() and objective[-1] == pytest.approx(-2.0)


def test_kl_penalty_explorer_rewards_match_the_rollout_formula():
    logp = torch.tensor([[-1.0, -2.0, -0.5], [-0.1, -0.2, 0.0]])
    ref = torch.tensor([[-1.5, -1.0, -0.5], [-0.1, -0.7, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    scores = torch.tensor([2.0, -1.0])
    explorer = widgets.KLPenaltyExplorer(logp, ref, mask, scores, beta=0.0)
    # bars: -beta KL_t per token, then the RM score stacked on the last token
    assert bar_heights(explorer.fig.axes[0]) == [0.0, 0.0, 0.0, 2.0]  # beta 0: only the score
    explorer.set(beta=0.5)
    # k1 = logp - ref: row 0 = [0.5, -1, 0]; r = -0.5 * k1, + 2 at the last token
    assert bar_heights(explorer.fig.axes[0]) == pytest.approx([-0.25, 0.5, 0.0, 2.0])
    assert explorer.rewards(0.5, "k1")[0][0].tolist() == pytest.approx([-0.25, 0.5, 2.0])
    explorer.set(response=1)  # two real tokens: the score sits on the second
    assert bar_heights(explorer.fig.axes[0]) == pytest.approx([0.0, -0.25, -1.0])
    assert explorer.rewards(0.5, "k1")[0][1].tolist() == pytest.approx([0.0, -1.25, 0.0])
    totals = explorer.fig.axes[1].collections[0].get_offsets()  # (KL, total) per response
    assert totals.flatten().tolist() == pytest.approx([-0.5, 2.25, 0.5, -1.25])
    explorer.set(estimator="k3")
    k3 = torch.expm1(torch.tensor(-0.5)) + 0.5  # row 1, token 1: log r = -0.5
    assert bar_heights(explorer.fig.axes[0])[1] == pytest.approx(-0.5 * k3.item())


def test_temperature_explorer_diversity_grows_with_temperature(tiny_policy, tokenizer):
    peaked = copy.deepcopy(tiny_policy)
    with torch.no_grad():
        peaked.lm_head.weight.mul_(5)  # logits far apart: a low temperature is then greedy
    explorer = widgets.TemperatureExplorer(peaked, tokenizer, "name three fruits .",
                                           temperature=1.0, n_samples=8, max_new_tokens=4,
                                           grid=(0.001, 1.0, 2.0))
    assert explorer.grid_distinct[0] == 1 and explorer.grid_distinct[-1] == 8
    assert all(0 <= n <= 8 for n in explorer.grid_readable)
    legend = [t.get_text() for t in explorer.fig.axes[1].get_legend().get_texts()]
    assert legend == ["distinct (variety)", "readable (reliability)", "first-token entropy"]
    assert explorer.entropy(0.001) < explorer.entropy(1.0) < explorer.entropy(2.0)
    probs = torch.softmax(explorer.logits, -1).topk(10).values.tolist()
    assert bar_heights(explorer.fig.axes[0]) == pytest.approx(probs)
    html_before, png_before = explorer.samples_html.value, explorer.image.value
    explorer.set(temperature=0.05)  # the slider's minimum
    sharp = torch.softmax(explorer.logits / 0.05, -1).topk(10).values.tolist()
    assert bar_heights(explorer.fig.axes[0]) == pytest.approx(sharp)
    assert explorer.samples_html.value != html_before and explorer.image.value != png_before
    assert "of 8" in explorer.samples_html.value


@pytest.mark.parametrize("text, expected", [
    ("a plum is purple . a cat", True),  # the cut-off fragment is not judged
    ("what is two plus three ? user : a plum is purple .", True),  # turn markers are skipped
    ("a plum is purple . plum a is purple .", False),  # a sentence the world never writes
    ("a plum is", False),  # nothing finished: nothing to read
    ("", False),
])
def test_temperature_explorer_reads_samples_as_the_labeler_does(text, expected):
    assert widgets.readable(text) is expected


# ----------------------------------------------------------------------------- be the labeler
@pytest.fixture
def labeler_widget(tiny_policy, tokenizer, tmp_path):
    prompts = data.load_records("prompts_train")[:5]
    return widgets.LabelerWidget(tiny_policy, tokenizer, prompts, tmp_path / "mine.jsonl", k=4,
                                 max_new_tokens=6)


def rank(widget, ranks):
    for box, r in zip(widget.rank_boxes, ranks):
        box.value = r


def test_labeler_appends_rankings_the_reward_model_reads(labeler_widget):
    w = labeler_widget
    first = {"prompt": w.prompt, "responses": list(w.responses), "terminated": list(w.terminated)}
    assert first["prompt"]["prompt"] in w.prompt_label.value
    assert all(html.escape(text) in label.value
               for text, label in zip(w.responses, w.response_labels))
    rank(w, [3, 1, 4, 2])  # B best, then D, A, C
    w.save_button.click()
    assert "Saved: 1 ranking" in w.message.value
    # next prompt, ranks cleared
    assert w.shown == 2 and [b.value for b in w.rank_boxes] == [None] * 4
    second = {"prompt": w.prompt, "responses": list(w.responses)}
    rank(w, [1, 2, 3, 4])
    w.save_button.click()
    records = comparisons.read_rankings(w.path)  # the RM's loader: schema and permutation checks
    assert data.read_jsonl(w.path, data.SCHEMAS["rankings"]) == records
    assert records[0] == {"prompt_id": first["prompt"]["id"], "prompt": first["prompt"]["prompt"],
                          "responses": first["responses"], "terminated": first["terminated"],
                          "ranking": [1, 3, 0, 2]}
    assert records[1]["ranking"] == [0, 1, 2, 3] and records[1]["responses"] == second["responses"]
    lines = w.path.read_text().splitlines()
    assert lines[0] == json.dumps(records[0], sort_keys=True)  # the format data.write_jsonl writes
    batch = reward.collate_rankings(w.tokenizer, records)  # and the RM's batches accept it
    assert batch["chosen"].tolist()[:3] == [1, 1, 1] and len(batch["chosen"]) == 12


@pytest.mark.parametrize("ranks, message", [
    ([1, None, 2, 3], "B has none yet"),
    ([None, None, 1, 2], "A, B have none yet"),
    ([1, 2, 2, 3], "Rank 2 is given to B and C"),
    ([4, 4, 4, 4], "Rank 4 is given to A and B and C and D"),
])
def test_incomplete_or_duplicate_ranking_is_refused_and_nothing_is_written(labeler_widget, ranks,
                                                                            message):
    w = labeler_widget
    prompt, responses = w.prompt, list(w.responses)
    rank(w, ranks)
    w.save_button.click()
    assert message in w.message.value and "Nothing was saved" in w.message.value
    assert not w.path.exists()
    # same prompt, ranks kept
    assert w.prompt == prompt and w.responses == responses and w.shown == 1
    assert [b.value for b in w.rank_boxes] == ranks
    rank(w, [2, 1, 3, 4])  # fixed: accepted
    w.save_button.click()
    assert comparisons.read_rankings(w.path)[0]["ranking"] == [1, 0, 2, 3]


def test_labeler_display_is_the_widget_with_a_static_html_view(labeler_widget):
    bundle = labeler_widget._repr_mimebundle_()
    assert (bundle["application/vnd.jupyter.widget-view+json"]["model_id"]
            == labeler_widget.widget.model_id)
    assert html.escape(labeler_widget.prompt["prompt"]) in bundle["text/html"]
    assert all(html.escape(text) in bundle["text/html"] for text in labeler_widget.responses)


def test_skip_shows_another_prompt_and_writes_nothing(labeler_widget):
    w = labeler_widget
    seen = [w.prompt["id"]]
    for _ in range(4):
        w.skip_button.click()
        seen.append(w.prompt["id"])
    assert len(set(seen)) == 5 and not w.path.exists()
    w.skip_button.click()  # the queue wraps around
    assert w.prompt["id"] == seen[0]


def test_labeler_needs_two_responses(tiny_policy, tokenizer, tmp_path):
    with pytest.raises(ValueError, match="at least 2"):
        widgets.LabelerWidget(tiny_policy, tokenizer, data.load_records("prompts_train")[:2],
                              tmp_path / "x", k=1)


def test_labeler_needs_prompts_with_ids(tiny_policy, tokenizer, tmp_path):
    """Checked before anyone ranks: not a ZeroDivisionError at start or a KeyError on save."""
    with pytest.raises(ValueError, match="no prompts to rank"):
        widgets.LabelerWidget(tiny_policy, tokenizer, [], tmp_path / "x")
    prompts = data.load_records("prompts_train")[:2]
    with pytest.raises(data.DataError, match=r"prompts\[1\]: field 'id' should be a non-empty "
                                             r"string, got None"):
        widgets.LabelerWidget(tiny_policy, tokenizer, [prompts[0], {"prompt": "hi ."}],
                              tmp_path / "x")
    unnamed = data.Record({**prompts[1], "id": ""})
    unnamed.source = ("prompts.jsonl", 7)  # a prompt read from a file is named by its line
    with pytest.raises(data.DataError, match=r"prompts.jsonl, line 7: field 'id'"):
        widgets.LabelerWidget(tiny_policy, tokenizer, [prompts[0], unnamed], tmp_path / "x")


def refused(w, before: bytes | None) -> None:
    """The save was refused with a message, the file left as it was, the ranks kept."""
    assert "Nothing was saved" in w.message.value and w.shown == 1
    assert [b.value for b in w.rank_boxes] == [3, 1, 4, 2]
    assert (w.path.read_bytes() if w.path.is_file() else None) == before
    assert not list(w.path.parent.glob("*.tmp"))  # nothing half-written beside it


def test_labeler_appends_nothing_to_a_file_of_invalid_rankings(labeler_widget):
    w = labeler_widget
    bad = {"prompt_id": "p", "prompt": "q", "responses": ["a", "b"], "terminated": [True, True],
           "ranking": [0, 0]}  # the right types, but not a ranking the RM could train on
    data.write_jsonl(w.path, [bad])
    before = w.path.read_bytes()
    rank(w, [3, 1, 4, 2])
    w.save_button.click()
    assert html.escape(f"{w.path}, line 1: field 'ranking' should be a permutation of 0..1") in (
        w.message.value)
    refused(w, before)
    w.path.write_bytes(b"\xff\xfe not text\n")
    w.save_button.click()
    assert "does not hold valid rankings" in w.message.value
    refused(w, b"\xff\xfe not text\n")
    w.path.unlink()  # moved away: saved
    w.save_button.click()
    assert "Saved: 1 ranking" in w.message.value and len(comparisons.read_rankings(w.path)) == 1


def test_labeler_shows_why_a_path_cannot_be_written(labeler_widget):
    w = labeler_widget
    w.path.parent.joinpath("taken").write_text("a file, not a folder\n")
    rank(w, [3, 1, 4, 2])
    # a file where its folder should be; a folder where the file should be
    for path in (w.path.parent / "taken" / "mine.jsonl", w.path.parent):
        w.path = path
        w.save_button.click()  # a button swallows exceptions: the message must say it
        assert html.escape(f"Could not save to {path} (") in w.message.value
        refused(w, None)
    assert sorted(p.name for p in w.path.iterdir()) == ["taken"]


def test_verbose_student_prefers_longer_answers():
    record = {"prompt_id": "p", "prompt": "q", "responses": ["a", "a b c d e f g h", "a b c"],
              "terminated": [True] * 3, "ranking": [0, 1, 2]}
    ranked = widgets.verbose_student_rankings([record] * 200, seed=0)
    firsts = [r["ranking"][0] for r in ranked]
    assert firsts.count(1) > 190  # 5 words ahead: the noise (0.9) almost never flips it
    assert all(sorted(r["ranking"]) == [0, 1, 2] and r["responses"] == record["responses"]
               for r in ranked)
    assert record["ranking"] == [0, 1, 2]  # the input is not modified
