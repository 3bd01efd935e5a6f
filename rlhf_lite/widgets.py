"""What students touch: explorers (sliders that redraw a figure) and "be the labeler".

Explorers. Each is a few controls above a matplotlib figure that is redrawn whenever a control
moves: the figure is drawn with the Agg backend into PNG bytes held by an `ipywidgets.Image`,
so no interactive matplotlib backend is needed and the same code runs headless in tests.
Displayed in a notebook, an explorer also carries its initial figure as a plain PNG: where no
live kernel drives the widget (a notebook run by CI or nbconvert, then opened on GitHub or
untrusted in JupyterLab) that picture is shown instead.

- `TemperatureExplorer` (notebook 1): sampling temperature against the variety and the
  readability of samples.
- `GAEExplorer` (notebook 4): advantages against lambda and gamma.
- `ClippedSurrogateExplorer` (notebook 5): PPO's clipped objective against epsilon and the
  sign of the advantage.
- `KLPenaltyExplorer` (notebook 6): per-token and total rewards of real rollouts against beta.

Be the labeler (notebook 3). `LabelerWidget` shows a prompt and K completions sampled from a
policy; the student ranks them and each accepted ranking is appended to a JSONL file in the
format the reward model trains on (`rlhf_lite.comparisons.read_rankings`), as InstructGPT's
labelers ranked K = 4..9 completions (Ouyang et al. 2022, sec 3.4).
"""
from __future__ import annotations

import base64
import html
import io
import random
from pathlib import Path

import ipywidgets as widgets
import matplotlib
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from .chat import format_prompt
from .comparisons import check_ranking, read_rankings
from .data import DataError, locate, write_jsonl
from .gae import compute_gae
from .generation import complete
from .kl import KINDS, penalised_rewards
from .labeler import LABELER_NOISE, gumbel, sentences
from .ppo import clipped_policy_loss
from .utils import derive_seed, eval_mode
from .world import parses

DPI = 100  # small PNGs: every redraw travels to the browser, and the first one into the notebook
# points, for every text of a figure (titles, labels, ticks, legends): readable on a projector
FONT_SIZE = 12


class Explorer:
    """Controls (name -> widget with a `.value`) above a figure that `draw` repaints.

    Subclasses implement `draw(fig, **values)`, called on a cleared figure with the current
    value of every control. `set(name=value)` moves controls from code (tests, solutions).
    """

    figsize = (9, 3.8)

    def __init__(self, controls: dict[str, widgets.ValueWidget], below: list | None = None):
        self.controls = controls
        # a pyplot-free Figure: no global state, and the inline backend never shows it twice
        self.fig = Figure(figsize=self.figsize, layout="tight")
        FigureCanvasAgg(self.fig)
        self.image = widgets.Image(format="png")
        self.widget = widgets.VBox([widgets.HBox(list(controls.values())), self.image,
                                    *(below or [])])
        for control in controls.values():
            control.observe(lambda _: self.redraw(), names="value")
        self.redraw()

    @property
    def settings(self) -> dict:
        """The current value of every control, by name."""
        return {name: control.value for name, control in self.controls.items()}

    def set(self, **values) -> None:
        for name, value in values.items():
            self.controls[name].value = value

    def draw(self, fig: Figure, **values) -> None:
        raise NotImplementedError

    def redraw(self) -> None:
        self.fig.clear()
        buffer = io.BytesIO()
        with matplotlib.rc_context({"font.size": FONT_SIZE, "legend.fontsize": FONT_SIZE,
                                    "xtick.labelsize": FONT_SIZE, "ytick.labelsize": FONT_SIZE}):
            self.draw(self.fig, **self.settings)
            self.fig.savefig(buffer, format="png", dpi=DPI)
        self.image.value = buffer.getvalue()

    def _repr_mimebundle_(self, **kwargs) -> dict:
        """The live widget, plus the current figure as a PNG for viewers without a kernel."""
        bundle = self.widget._repr_mimebundle_(**kwargs)
        bundle["image/png"] = base64.b64encode(self.image.value).decode("ascii")
        return bundle


def _slider(value: float, low: float, high: float, step: float, description: str
            ) -> widgets.FloatSlider:
    # continuous_update=False: redraw when the handle is released, not at every pixel of a drag
    return widgets.FloatSlider(value=value, min=low, max=high, step=step,
                               description=description, continuous_update=False)


# ----------------------------------------------------------------------------- notebook 1
def readable(text: str) -> bool:
    """Whether a sample reads as the world's text: it finishes at least one sentence, and every
    sentence it finishes is one the world's grammar writes (`world.parses`, as the gold
    labeler reads). The words after its last "." or "?" are not judged: the explorer cuts
    samples at a fixed length, so an unfinished last sentence says nothing about temperature."""
    finished = [s for s in sentences(text.split()) if s[-1] in (".", "?")]
    return bool(finished) and all(parses(" ".join(s)) for s in finished)


class TemperatureExplorer(Explorer):
    """How the sampling temperature T trades reliability for variety.

    Sampling draws the next token from softmax(logits / T): T < 1 sharpens the distribution
    (T -> 0 is greedy decoding, every sample alike), T > 1 flattens it (more distinct
    samples, and more nonsense). Left: the distribution of the first response token at T,
    and its entropy. Right, against T, precomputed on `grid` (the dots are the current T):
    variety (distinct responses among `n_samples` samples), reliability (`readable` ones)
    and the first token's entropy. Below: the samples.
    """

    figsize = (12, 4.6)

    def __init__(self, model, tokenizer, prompt: str, temperature: float = 1.0,
                 n_samples: int = 16, max_new_tokens: int = 12,
                 grid=(0.1, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0), seed: int = 0, top: int = 10):
        self.model, self.tokenizer, self.prompt = model, tokenizer, {"prompt": prompt}
        self.n_samples, self.max_new_tokens = n_samples, max_new_tokens
        self.seed, self.top = seed, top
        enc = tokenizer([format_prompt(prompt)], return_tensors="pt")
        with eval_mode(model), torch.no_grad():  # no dropout, like sampling
            self.logits = model(enc["input_ids"], enc["attention_mask"])[0, -1]  # (V,)
        self.grid = list(grid)
        grid_samples = [self.sample(t) for t in self.grid]
        self.grid_distinct = [len(set(samples)) for samples in grid_samples]
        self.grid_readable = [sum(map(readable, samples)) for samples in grid_samples]
        self.samples_html = widgets.HTML()
        super().__init__({"temperature": _slider(temperature, 0.05, 2.0, 0.05, "temperature")},
                         below=[self.samples_html])

    def sample(self, temperature: float) -> list[str]:
        """`n_samples` responses at `temperature`, with the same seed at every temperature."""
        return [c.text for c in complete(self.model, self.tokenizer,
                                         [self.prompt] * self.n_samples,
                                         max_new_tokens=self.max_new_tokens,
                                         temperature=temperature, seed=self.seed)]

    def entropy(self, temperature: float) -> float:
        """Entropy (nats) of the first response token's distribution at `temperature`."""
        logp = torch.log_softmax(self.logits / temperature, dim=-1)
        return -(logp.exp() * logp).sum().item()

    def draw(self, fig, temperature):
        samples = self.sample(temperature)
        n_readable = sum(map(readable, samples))
        probs = torch.softmax(self.logits / temperature, dim=-1)
        top = probs.topk(self.top)
        ax1, ax2 = fig.subplots(1, 2)
        ax1.bar(range(self.top), top.values.numpy(), color="tab:blue",
                label=f"top {self.top} first tokens")
        ax1.set_xticks(range(self.top), self.tokenizer.convert_ids_to_tokens(top.indices.tolist()),
                       rotation=60)
        ax1.set(ylim=(0, 1), xlabel="first token", ylabel="probability",
                title=f"first token at T = {temperature:.2f} "
                      f"(entropy {self.entropy(temperature):.2f})")
        ax1.legend(loc="upper right")
        lines = ax2.plot(self.grid, self.grid_distinct, "o-", color="tab:orange",
                         label="distinct (variety)")
        lines += ax2.plot(self.grid, self.grid_readable, "s-", color="tab:purple",
                          label="readable (reliability)")
        ax2.plot([temperature] * 2, [len(set(samples)), n_readable], "o",
                 color="black", ms=7)
        ax2.set(xlabel="temperature T", ylabel=f"samples of {self.n_samples}",
                ylim=(0, self.n_samples + 0.5))
        ax2.yaxis.set_major_locator(MaxNLocator(integer=True))  # counts of samples
        fine = torch.linspace(min(self.grid), max(self.grid), 60).tolist()
        twin = ax2.twinx()
        lines += twin.plot(fine, [self.entropy(t) for t in fine], color="tab:green",
                           label="first-token entropy")
        twin.set_ylabel("first-token entropy (nats)", color="tab:green")
        ax2.axvline(temperature, color="gray", lw=0.8)
        # both axes' lines in one legend, under the panel where it hides none of them
        ax2.legend(handles=lines, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2)
        ax2.set_title("variety and reliability against temperature")
        counts = {text: samples.count(text) for text in dict.fromkeys(samples)}
        rows = "".join(f"<li>{n} x <code>{html.escape(text) or '(empty)'}</code></li>"
                       for text, n in sorted(counts.items(), key=lambda kv: -kv[1])[:8])
        self.samples_html.value = (f"<b>{html.escape(self.prompt['prompt'])}</b> at T = "
                                   f"{temperature:.2f}: {len(counts)} distinct of "
                                   f"{self.n_samples}, {n_readable} readable"
                                   f"<ul>{rows}</ul>")


# ----------------------------------------------------------------------------- notebook 4
class GAEExplorer(Explorer):
    """GAE advantages of one response (rewards, values (T,) or (1, T)) against lambda, gamma.

    lambda = 0: each token's advantage is its one-step TD error (credit from the value
    model's changes); lambda -> 1: the final score flows back to every token; gamma < 1:
    early tokens care less about the end. Uses `rlhf_lite.gae.compute_gae`.
    """

    def __init__(self, rewards: torch.Tensor, values: torch.Tensor, lam: float = 0.95,
                 gamma: float = 1.0):
        self.rewards, self.values = rewards.reshape(1, -1).float(), values.reshape(1, -1).float()
        self.mask = torch.ones_like(self.rewards)
        extremes = torch.cat([compute_gae(self.rewards, self.values, self.mask, g, lm)[0]
                              for g in (0.5, 1.0) for lm in (0.0, 1.0)])
        shown = torch.cat([extremes.flatten(), self.values.flatten(), self.rewards.flatten()])
        low, high = min(shown.min().item(), 0), shown.max().item()
        # fixed: bars move, not axes
        self.ylim = (low - 0.15 * (high - low), high + 0.15 * (high - low))
        super().__init__({"lam": _slider(lam, 0.0, 1.0, 0.05, "lambda"),
                          "gamma": _slider(gamma, 0.5, 1.0, 0.01, "gamma")})

    def draw(self, fig, lam, gamma):
        advantages, _ = compute_gae(self.rewards, self.values, self.mask, gamma, lam)
        adv, n = advantages[0], self.rewards.shape[1]
        ax = fig.subplots()
        ax.bar(range(n), adv.numpy(), color=["tab:green" if a > 0 else "tab:red" for a in adv],
               label="advantage $A_t$")
        ax.plot(range(n), self.values[0].numpy(), "k.--", label="value $V_t$")
        ax.plot(range(n), self.rewards[0].numpy(), "x", color="tab:blue", label="reward $r_t$")
        ax.axhline(0, color="gray", lw=0.5)
        ax.set(xlabel="response token t", ylabel="value / reward / advantage", ylim=self.ylim,
               title=f"GAE advantages, $\\lambda$ = {lam:.2f}, $\\gamma$ = {gamma:.2f}")
        ax.legend(loc="best")  # where it hides the fewest bars and points


# ----------------------------------------------------------------------------- notebook 5
class ClippedSurrogateExplorer(Explorer):
    """PPO's objective for one token, -clipped_policy_loss, against the ratio pi / pi_old.

    Shaded: where the clipped term is the active one, so the gradient is zero and the update
    stops pushing that token. With A > 0 that is ratio > 1 + eps, with A < 0 ratio < 1 - eps.
    """

    def __init__(self, clip_eps: float = 0.2, advantage: float = 1.0, max_ratio: float = 2.0):
        self.ratios = torch.linspace(0.0, max_ratio, 201)[1:]  # (R,) log ratio of 0 is -inf
        super().__init__({"clip_eps": _slider(clip_eps, 0.0, 0.5, 0.01, "epsilon"),
                          "advantage": _slider(advantage, -2.0, 2.0, 0.1, "advantage")})

    def objective(self, clip_eps: float, advantage: float) -> tuple[torch.Tensor, torch.Tensor]:
        """The package's objective at each ratio (R,), and whether the clip was active (R,)."""
        objective, clipped, one = [], [], torch.ones(1, 1)
        for ratio in self.ratios:
            loss, stats = clipped_policy_loss(ratio.log().view(1, 1), torch.zeros(1, 1),
                                              advantage * one, one, clip_eps)
            objective.append(-loss.item())
            clipped.append(stats["clipfrac"] > 0)
        return torch.tensor(objective), torch.tensor(clipped)

    def draw(self, fig, clip_eps, advantage):
        objective, clipped = self.objective(clip_eps, advantage)
        ax = fig.subplots()
        ax.plot(self.ratios, advantage * self.ratios, "--", color="gray",
                label=r"$\rho A$ (unclipped)")
        ax.plot(self.ratios, objective, lw=2.5, label=r"$L^{CLIP}$ (package)")
        ax.axvspan(1 - clip_eps, 1 + clip_eps, color="tab:green", alpha=0.12,
                   label=r"$[1-\epsilon, 1+\epsilon]$")
        ax.fill_between(self.ratios, 0, 1, where=clipped.numpy(), color="tab:red", alpha=0.12,
                        transform=ax.get_xaxis_transform(), label="clipped: no gradient")
        ax.axhline(0, color="gray", lw=0.5)
        bound = 2.0 * self.ratios.max().item()
        ax.set(xlabel=r"ratio $\rho = \pi_\theta / \pi_{old}$", ylabel="objective (maximised)",
               ylim=(-bound, bound), title=f"A = {advantage:+.1f}, $\\epsilon$ = {clip_eps:.2f}")
        ax.legend(loc="upper left")


# ----------------------------------------------------------------------------- notebook 6
class KLPenaltyExplorer(Explorer):
    """Per-token rewards r_t = -beta KL_t (+ the RM score at the last token) of real rollouts.

    logprobs, ref_logprobs, mask: (B, N) over response tokens (a `ppo.Rollout`'s fields);
    scores: (B,) RM scores. Left: one response's per-token rewards at the current beta.
    Right: every response's total reward (score - beta * KL of the response) against its KL:
    the larger beta, the more a response that drifted from the reference loses.
    `tokens` (optional): the response tokens of each row, to label the left plot.
    """

    figsize = (12, 4.2)

    def __init__(self, logprobs: torch.Tensor, ref_logprobs: torch.Tensor, mask: torch.Tensor,
                 scores: torch.Tensor, beta: float = 0.1, tokens: list[list[str]] | None = None,
                 max_beta: float = 1.0):
        self.logprobs, self.ref_logprobs = logprobs, ref_logprobs
        self.mask, self.scores = mask, scores
        self.tokens = tokens
        super().__init__({"beta": _slider(beta, 0.0, max_beta, 0.01, "beta"),
                          "response": widgets.IntSlider(value=0, min=0, max=len(scores) - 1,
                                                        description="response",
                                                        continuous_update=False),
                          "estimator": widgets.Dropdown(options=KINDS, value="k1",
                                                        description="estimator")})

    def rewards(self, beta: float, estimator: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-token rewards (B, N), as `ppo.PPOTrainer.rollout` builds them, and KL per
        response (B,)."""
        rewards, kl = penalised_rewards(self.logprobs, self.ref_logprobs, self.mask, self.scores,
                                        beta, estimator)
        return rewards, kl.sum(1)

    def draw(self, fig, beta, response, estimator):
        rewards, kl = self.rewards(beta, estimator)  # (B, N), (B,)
        n = int(self.mask[response].sum())
        ax1, ax2 = fig.subplots(1, 2)
        score = self.scores[response].item()
        penalty = rewards[response, :n].clone()
        penalty[-1] -= score  # the KL part of each token's reward; the score is drawn on top
        ax1.bar(range(n), penalty.numpy(),
                color=["tab:green" if r > 0 else "tab:red" for r in penalty])
        ax1.bar([n - 1], [score], bottom=[penalty[-1].item()], color="tab:blue", alpha=0.6)
        # one swatch per colour: a penalty (k1 < 0 makes a bonus), and the score on top
        ax1.legend(handles=[Patch(color="tab:red", label=r"$-\beta\,$KL$_t$ < 0 (penalty)"),
                            Patch(color="tab:green", label=r"$-\beta\,$KL$_t$ > 0 (bonus)"),
                            Patch(color="tab:blue", alpha=0.6, label="RM score")], loc="best")
        ax1.set_xlabel("response token")
        if self.tokens is not None:
            ax1.set_xticks(range(n), self.tokens[response][:n], rotation=60)
        else:
            ax1.xaxis.set_major_locator(MaxNLocator(integer=True))  # token positions
        ax1.axhline(0, color="gray", lw=0.5)
        ax1.set(ylabel="reward $r_t$", title=f"response {response}: RM score {score:.2f}, "
                f"KL {kl[response].item():.2f}")
        total = rewards.sum(1)  # (B,) = score - beta * KL of each response
        ax2.scatter(kl.numpy(), total.numpy(), s=10, alpha=0.5, label="a response")
        ax2.scatter([kl[response].item()], [total[response].item()], s=60, color="black",
                    label=f"response {response}")
        ax2.axhline(total.mean().item(), color="tab:orange", lw=1,
                    label=f"mean total reward {total.mean().item():.2f}")
        ax2.set(xlabel=f"KL to the reference per response ({estimator}, nats)",
                ylabel=r"total reward (score $- \beta$ KL)",
                title=f"$\\beta$ = {beta:.2f}: mean RM score {self.scores.mean().item():.2f}, "
                      f"mean KL {kl.mean().item():.2f}")
        ax2.legend(loc="best")


# ----------------------------------------------------------------------------- notebook 3
class LabelerWidget:
    """Rank K completions of a prompt yourself; accepted rankings are appended to `path`.

    Each completion gets a rank (1 = best) in a dropdown. "Save ranking" refuses, with a
    message and without writing anything, a ranking where a completion has no rank or two
    share one. An accepted ranking is appended as one JSONL record {"prompt_id", "prompt",
    "responses", "terminated", "ranking" (indices, best first)}, exactly what
    `comparisons.read_rankings` reads and `reward.train_reward_model` trains on; then the next
    prompt is shown. Completions are sampled from `policy`, seeded per prompt shown.

    Nothing is appended to a file that does not hold valid rankings already (the RM would fail
    on it later), and a path that cannot be written is reported in the widget: either way the
    ranks stay for another try. The prompts are checked up front, before anyone ranks.
    """

    def __init__(self, policy, tokenizer, prompts: list[dict], path: str | Path, k: int = 4,
                 seed: int = 0, temperature: float = 1.0, max_new_tokens: int = 24):
        if k < 2:
            raise ValueError(f"k must be at least 2 to rank, got {k}")
        check_prompts(prompts)
        self.policy, self.tokenizer, self.path = policy, tokenizer, Path(path)
        self.k, self.seed = k, seed
        self.temperature, self.max_new_tokens = temperature, max_new_tokens
        self.queue = random.Random(seed).sample(prompts, len(prompts))  # a fixed shuffled order
        self.shown = 0  # prompts shown so far (also seeds each prompt's sampling)
        self.letters = [chr(ord("A") + i) for i in range(k)]
        self.rank_boxes = [widgets.Dropdown(options=[("-", None)]
                                            + [(str(r), r) for r in range(1, k + 1)],
                                            value=None, description=f"{letter}: rank",
                                            layout=widgets.Layout(width="160px"))
                           for letter in self.letters]
        self.response_labels = [widgets.HTML() for _ in range(k)]
        self.prompt_label = widgets.HTML()
        self.message = widgets.HTML()
        self.save_button = widgets.Button(description="Save ranking", button_style="success")
        self.skip_button = widgets.Button(description="Skip prompt")
        self.save_button.on_click(lambda _: self.save())
        self.skip_button.on_click(lambda _: self.next_prompt())
        rows = [widgets.HBox([box, label])
                for box, label in zip(self.rank_boxes, self.response_labels)]
        self.widget = widgets.VBox([self.prompt_label, *rows,
                                    widgets.HBox([self.save_button, self.skip_button]),
                                    self.message])
        self.next_prompt()

    def next_prompt(self) -> None:
        """Sample K completions of the next prompt and clear the ranks."""
        self.prompt = self.queue[self.shown % len(self.queue)]
        completions = complete(self.policy, self.tokenizer, [self.prompt] * self.k,
                               max_new_tokens=self.max_new_tokens, temperature=self.temperature,
                               seed=derive_seed(self.seed, self.shown))
        self.responses = [c.text for c in completions]
        self.terminated = [c.terminated for c in completions]
        self.shown += 1
        self.prompt_label.value = (f"<b>Prompt:</b> {html.escape(self.prompt['prompt'])} "
                                   f"<i>(rank the {self.k} responses, 1 = best)</i>")
        for box, label, text, done in zip(self.rank_boxes, self.response_labels, self.responses,
                                          self.terminated):
            box.value = None
            cut = "" if done else " <i>[cut off: no end token]</i>"
            label.value = f"<code>{html.escape(text) or '(empty)'}</code>{cut}"

    def ranking(self) -> list[int]:
        """Response indices, best first; ValueError (the message shown) if ranks are missing or
        shared."""
        ranks = [box.value for box in self.rank_boxes]
        unranked = [letter for letter, r in zip(self.letters, ranks) if r is None]
        if unranked:
            raise ValueError(f"Give every response a rank: {', '.join(unranked)} "
                             f"{'has' if len(unranked) == 1 else 'have'} none yet.")
        for r in sorted(set(ranks)):
            holders = [letter for letter, rank in zip(self.letters, ranks) if rank == r]
            if len(holders) > 1:
                raise ValueError(f"Rank {r} is given to {' and '.join(holders)}: give each "
                                 "response its own rank.")
        return sorted(range(self.k), key=lambda i: ranks[i])

    def record(self) -> dict:
        return {"prompt_id": self.prompt["id"], "prompt": self.prompt["prompt"],
                "responses": self.responses, "terminated": self.terminated,
                "ranking": self.ranking()}

    def save(self) -> bool:
        """Append the current ranking to `path` and move on; False (nothing written, the ranks
        kept) if refused, with the reason in the message."""
        try:
            record = self.record()
        except ValueError as e:
            return self.refuse(str(e))
        check_ranking(record, f"ranking for {self.path}")  # the RM's own check, before writing
        try:
            saved = read_rankings(self.path) if self.path.exists() else []
            write_jsonl(self.path, [*saved, record])  # atomic: a crash never leaves half a line
        except ValueError as e:  # a DataError naming line and field, or bytes that are not text
            return self.refuse(f"{self.path} does not hold valid rankings ({e}): fix or move "
                               "that file, or rank into another path.")
        except OSError as e:  # a folder in the way or not writable, a full disk
            return self.refuse(f"Could not save to {self.path} ({e}): rank into a path you can "
                               "write.")
        self.message.value = (f"<span style='color:#070'>Saved: {len(saved) + 1} ranking(s) in "
                              f"{html.escape(str(self.path))}.</span>")
        self.next_prompt()
        return True

    def refuse(self, reason: str) -> bool:
        """Show why nothing was saved; the prompt and its ranks stay."""
        self.message.value = (f"<span style='color:#b00'>{html.escape(reason)} "
                              "Nothing was saved.</span>")
        return False

    def _repr_mimebundle_(self, **kwargs) -> dict:
        """The live widget, plus a static HTML view of the prompt and its responses."""
        bundle = self.widget._repr_mimebundle_(**kwargs)
        items = "".join(f"<li>{label.value}</li>" for label in self.response_labels)
        bundle["text/html"] = (f"<div>{self.prompt_label.value}<ol type='A'>{items}</ol>"
                               "<i>Run the notebook to rank them.</i></div>")
        return bundle


def check_prompts(prompts: list[dict]) -> None:
    """The labeler's prompts: at least one, each with a non-empty "id" (its rankings are saved
    under it) and "prompt"; a DataError naming the prompt's file and line (or its index)."""
    if not prompts:
        raise ValueError("no prompts to rank: pass a non-empty list of prompt records "
                         "{'id', 'prompt'}")
    for i, prompt in enumerate(prompts):
        for field in ("id", "prompt"):
            value = prompt.get(field) if isinstance(prompt, dict) else None
            if not isinstance(value, str) or not value.strip():
                raise DataError(f"{locate(prompt) or f'prompts[{i}]'}: field {field!r} should "
                                f"be a non-empty string, got {value!r}")


def verbose_student_rankings(rankings: list[dict], noise: float = LABELER_NOISE, seed: int = 0
                             ) -> list[dict]:
    """The same records re-ranked by a "student" who believes longer answers are more helpful.

    Notebook 3's stand-in when nobody has ranked anything yet: each response is scored by its
    number of words plus Gumbel noise (a Plackett-Luce labeler, like the gold one, with a
    verbosity bias instead of the gold score). Mixed into the gold rankings, it shows the RM
    learning whoever labels its data.
    """
    rng = random.Random(f"verbose student {seed}")  # noise no GoldLabeler(seed=...) shares
    out = []
    for record in rankings:
        noisy = [len(text.split()) + noise * gumbel(rng) for text in record["responses"]]
        out.append({**record, "ranking": sorted(range(len(noisy)), key=lambda i: -noisy[i])})
    return out
