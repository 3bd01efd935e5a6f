"""Real human preference data, converted to the rankings our reward model trains on.

The toy world's labeler ranks K sampled completions; public data sets hold pairs instead, a
ranking with K = 2. Two formats are read, from local JSON-lines files or, with a network,
from the Hugging Face hub through `datasets.load_dataset`:

* Anthropic HH-RLHF (Bai et al. 2022, "Training a Helpful and Harmless Assistant with RLHF";
  hub: "Anthropic/hh-rlhf"): {"chosen": dialogue, "rejected": dialogue}, two full dialogues
  "\\n\\nHuman: ...\\n\\nAssistant: ..." that share every turn but the last assistant reply.
* OpenAI summarize-from-feedback comparisons (Stiennon et al. 2020, "Learning to summarize
  from human feedback"; hub: "openai/summarize_from_feedback", config "comparisons"):
  {"info": {"id", "post", "title", "subreddit", "article"}, "summaries": [{"text"}, {"text"}],
  "choice": 0 or 1}, the labeler preferring summaries[choice].

Each record becomes one ranking record of `rlhf_lite.data.SCHEMAS["rankings"]`:
{"prompt_id", "prompt", "responses": [preferred, other], "terminated": [True, True],
"ranking": [0, 1]}. Human-written responses are complete, so both end with eos (where the RM
reads its score). Prompts are written in the course's chat template (`world.format_prompt`
wraps them as "user : ... bot :"), so a multi-turn HH dialogue becomes
"first question bot : reply user : next question" and `format_prompt` adds the outer markers:
the reward model reads real and toy data the same way.

A record that does not fit its format raises a `DataError` naming the file and line (or the
hub data set and record) and the field; `skip_invalid=True` drops such records instead and
warns with their number and the first reasons, never silently.
"""
from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Callable

from .data import DataError, read_jsonl
from .sft import prompt_response_ids
from .world import BOT, USER

HH_TURN = re.compile(r"\n\n(Human|Assistant):")  # the speaker markers of an HH dialogue


def _text(value, where: str, field: str) -> str:
    """A non-empty string field, stripped; DataError otherwise."""
    if not isinstance(value, str):
        raise DataError(f"{where}: field '{field}' should be str, got {type(value).__name__}")
    if not value.strip():
        raise DataError(f"{where}: field '{field}' is empty")
    return value.strip()


def _ranking(prompt_id: str, prompt: str, preferred: str, other: str) -> dict:
    return {"prompt_id": prompt_id, "prompt": prompt, "responses": [preferred, other],
            "terminated": [True, True], "ranking": [0, 1]}


# ----------------------------------------------------------------------------- HH-RLHF
def split_dialogue(dialogue: str, where: str, field: str) -> tuple[list[tuple[str, str]], str]:
    """An HH dialogue -> (turns before the last reply as (speaker, text), the last reply).

    The dialogue must start with a Human turn and end with an Assistant turn.
    """
    parts = HH_TURN.split(dialogue)  # ["", speaker, text, speaker, text, ...]
    if parts[0].strip() or len(parts) < 5:
        raise DataError(f"{where}: field '{field}' should be a dialogue '\\n\\nHuman: ...\\n\\n"
                        f"Assistant: ...' starting with a Human turn, got {dialogue[:60]!r}")
    turns = [(speaker, text.strip()) for speaker, text in zip(parts[1::2], parts[2::2])]
    if turns[0][0] != "Human" or turns[-1][0] != "Assistant":
        raise DataError(f"{where}: field '{field}' should start with a Human turn and end with "
                        f"an Assistant reply, got turns {[s for s, _ in turns]}")
    if not turns[-1][1]:
        raise DataError(f"{where}: field '{field}': the last Assistant reply is empty")
    return turns[:-1], turns[-1][1]


def dialogue_prompt(turns: list[tuple[str, str]]) -> str:
    """HH turns in the course's chat template, without the outer "user :" ... "bot :"."""
    marker = {"Human": USER, "Assistant": BOT}
    return " ".join([turns[0][1]] + [f"{marker[speaker]} {text}" for speaker, text in turns[1:]])


def hh_rlhf_ranking(record: dict, where: str, prompt_id: str) -> dict:
    """One HH-RLHF record {"chosen", "rejected"} -> a K = 2 ranking (preferred first)."""
    replies, prompts = [], []
    for field in ("chosen", "rejected"):
        _text(record.get(field), where, field)  # a non-empty string
        turns, reply = split_dialogue(record[field], where, field)
        prompts.append(turns)
        replies.append(reply)
    if prompts[0] != prompts[1]:
        raise DataError(f"{where}: field 'rejected' should repeat the dialogue of 'chosen' up to "
                        "the last Assistant reply, but the earlier turns differ")
    return _ranking(prompt_id, dialogue_prompt(prompts[0]), *replies)


# ----------------------------------------------------------------------------- summarize
def summarize_prompt(info: dict, where: str) -> str:
    """The instruction for a Reddit post (TL;DR) or a news article (CNN/DM) to summarise."""
    if info.get("post"):
        subreddit = _text(info.get("subreddit"), where, "info.subreddit")
        title = _text(info.get("title"), where, "info.title")
        post = _text(info["post"], where, "info.post")
        return f"Summarize this post.\nSUBREDDIT: r/{subreddit}\nTITLE: {title}\nPOST: {post}"
    if info.get("article"):
        return f"Summarize this article.\nARTICLE: {_text(info['article'], where, 'info.article')}"
    raise DataError(f"{where}: field 'info.post' is missing or empty (and there is no "
                    "'info.article'): nothing to summarise")


def summarize_ranking(record: dict, where: str, prompt_id: str) -> dict:
    """One summarize-from-feedback comparison -> a K = 2 ranking (the chosen summary first)."""
    info, summaries, choice = record.get("info"), record.get("summaries"), record.get("choice")
    if not isinstance(info, dict):
        raise DataError(f"{where}: field 'info' should be an object, got {type(info).__name__}")
    if not isinstance(summaries, list) or len(summaries) != 2:
        raise DataError(f"{where}: field 'summaries' should be a list of 2 summaries, got "
                        f"{len(summaries) if isinstance(summaries, list) else type(summaries).__name__}")
    if type(choice) is not int or choice not in (0, 1):
        raise DataError(f"{where}: field 'choice' should be 0 or 1 (the preferred summary), "
                        f"got {choice!r}")
    texts = []
    for i, summary in enumerate(summaries):
        if not isinstance(summary, dict):
            raise DataError(f"{where}: field 'summaries[{i}]' should be an object with 'text'")
        texts.append(_text(summary.get("text"), where, f"summaries[{i}].text"))
    prompt_id = info.get("id") if isinstance(info.get("id"), str) and info["id"] else prompt_id
    return _ranking(prompt_id, summarize_prompt(info, where), texts[choice], texts[1 - choice])


# ----------------------------------------------------------------------------- loading
def _load(convert: Callable[[dict, str, str], dict], name_or_path: str | Path, split: str,
          skip_invalid: bool, **load_kwargs) -> list[dict]:
    """Records of a local JSON-lines file (errors name its lines) or of a `datasets` source
    (a hub name, or a local folder of data files; errors name the record), converted."""
    path = Path(name_or_path)
    if path.is_file():
        records = read_jsonl(path, {})  # every line a JSON object; fields are checked below
        places = [f"{path}, line {i}" for i in range(1, len(records) + 1)]  # no blank lines
        id_prefix = path.stem
    else:
        from datasets import load_dataset

        records = list(load_dataset(str(name_or_path), split=split, **load_kwargs))
        places = [f"{name_or_path} ({split}), record {i}" for i in range(len(records))]
        id_prefix = split
    rankings, errors = [], []
    for i, (record, where) in enumerate(zip(records, places)):
        try:
            rankings.append(convert(record, where, f"{id_prefix}-{i}"))
        except DataError as e:
            if not skip_invalid:
                raise
            errors.append(str(e))
    if errors:
        warnings.warn(f"skipped {len(errors)} of {len(records)} invalid records; first: "
                      + " | ".join(errors[:3]))
    if not rankings:
        raise DataError(f"{name_or_path}: no valid records")
    return rankings


def load_hh_rlhf(name_or_path: str | Path = "Anthropic/hh-rlhf", split: str = "train",
                 skip_invalid: bool = False, **load_kwargs) -> list[dict]:
    """HH-RLHF pairs as K = 2 rankings: a local .jsonl file, or a `datasets` source (e.g. the
    hub's "Anthropic/hh-rlhf", with data_dir="harmless-base" for one subset; split "train" or
    "test", slices like "train[:1000]" work). load_kwargs go to `datasets.load_dataset`."""
    return _load(hh_rlhf_ranking, name_or_path, split, skip_invalid, **load_kwargs)


def load_summarize_feedback(name_or_path: str | Path = "openai/summarize_from_feedback",
                            split: str = "train", skip_invalid: bool = False, **load_kwargs
                            ) -> list[dict]:
    """Summarize-from-feedback comparisons as K = 2 rankings: a local file in OpenAI's
    comparisons format (JSON lines), or a `datasets` source (the hub's
    "openai/summarize_from_feedback" with name="comparisons"; splits "train", "validation")."""
    if not Path(name_or_path).is_file() and str(name_or_path) == "openai/summarize_from_feedback":
        load_kwargs.setdefault("name", "comparisons")
    return _load(summarize_ranking, name_or_path, split, skip_invalid, **load_kwargs)


def preferred_as_demonstrations(rankings: list[dict]) -> list[dict]:
    """The preferred response of each ranking as a demonstration {"prompt", "response"}.

    The RM's scores are shifted so demonstrations average 0 (`reward.normalize_to_demonstrations`);
    pair data sets have no separate demonstrations, so the preferred responses stand in.
    """
    return [{"prompt": r["prompt"], "response": r["responses"][r["ranking"][0]]} for r in rankings]


def fitting(rankings: list[dict], tokenizer, max_tokens: int) -> tuple[list[dict], int]:
    """The rankings whose every prompt + response + eos fits in `max_tokens` (a model's
    block_size), and how many were left out (real dialogues can be longer than GPT-2's 1024)."""
    kept = []
    for r in rankings:
        pairs = prompt_response_ids(tokenizer, [r["prompt"]] * len(r["responses"]), r["responses"])
        if all(len(prompt) + len(response) + 1 <= max_tokens for prompt, response in pairs):
            kept.append(r)
    return kept, len(rankings) - len(kept)
