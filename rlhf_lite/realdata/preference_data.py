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

Local files are read as their publishers ship them: gzip-compressed or not (HH-RLHF's
`train.jsonl.gz`), whatever the suffix. A summarize-from-feedback file holds the records of
every split, each naming its own ("train", "valid1", "valid2"): only those of the requested
split are kept ("validation": both valid ones), or training would see validation pairs.

A record that does not fit its format (or a line that is not JSON) raises a `DataError` naming
the file and line (or the hub data set and record) and the field; `skip_invalid=True` drops
such records instead and warns with their number and the first reasons, never silently. Pairs
whose two responses are identical (they teach the RM nothing) are kept, with a warning.

A real-data preset (`gpt2-hh`) runs every stage on one HH-RLHF source, divided once by
`split_comparisons` as its `PreferenceData` says, by prompt (the comparisons of one
prompt stay together, so no prompt is on both sides):

* "heldout": prompts only the evaluation samples (their pairs measure both reward models);
* "train" and "validation": the policy half. SFT learns its preferred responses, the reward
  model its pairs (its accuracy on "validation"), PPO samples its prompts;
* "gold_train" and "gold_validation": the gold half, read only by the "gold_rm" stage: the
  judge that stands in for human labelers offline, as Gao et al. (2022, "Scaling laws for
  reward model overoptimization") judge policies by a gold reward model trained apart.
"""
from __future__ import annotations

import dataclasses
import gzip
import json
import random
import re
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable

from ..batching import prompt_response_ids
from ..chat import BOT, USER
from ..data import DataError, file_sha256
from ..utils import check_config, integer, number, optional, rule, text

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

    The dialogue must start with a Human turn and end with an Assistant turn, and no Human turn
    may be empty (an empty first question would make an empty prompt).
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
    questions = [text for speaker, text in turns if speaker == "Human"]
    if not all(questions):
        raise DataError(f"{where}: field '{field}': Human turn {questions.index('') + 1} of "
                        f"{len(questions)} is empty")
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
        raise DataError(
            f"{where}: field 'summaries' should be a list of 2 summaries, got "
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
GZIP_MAGIC = b"\x1f\x8b"  # the first two bytes of every gzip file


def _parse_line(line: str, where: str) -> dict | DataError:
    """One JSON-lines line -> its object, or the DataError saying why not (returned, not
    raised: with skip_invalid a bad line is skipped like a bad record)."""
    if not line.strip():
        return DataError(f"{where}: empty line")
    try:
        record = json.loads(line)
    except json.JSONDecodeError as e:
        return DataError(f"{where}: not valid JSON ({e.msg})")
    return record if isinstance(record, dict) else DataError(f"{where}: expected a JSON object")


def _read_lines(path: Path) -> list[tuple[dict | DataError, str]]:
    """(record or DataError, "file, line n") for every line of a JSON-lines file, plain or
    gzip-compressed (told by its first bytes, not its name)."""
    with open(path, "rb") as f:
        compressed = f.read(2) == GZIP_MAGIC
    lines = []
    try:
        with (gzip.open if compressed else open)(path, "rt", encoding="utf-8") as f:
            for line_no, line in enumerate(f, start=1):
                where = f"{path}, line {line_no}"
                lines.append((_parse_line(line, where), where))
    except UnicodeDecodeError:  # text is decoded by blocks: the line is only roughly known
        raise DataError(f"{path}: not UTF-8 text (about line {len(lines) + 1}); expected JSON "
                        "lines, plain or gzip-compressed (for parquet or other formats pass "
                        "their folder or hub name)") from None
    except (gzip.BadGzipFile, EOFError) as e:  # e.g. a download cut short
        raise DataError(f"{path}: damaged gzip file after line {len(lines)} ({e})") from None
    if not lines:
        raise DataError(f"{path}: no records")
    return lines


def _records(name_or_path: str | Path, split: str, load_kwargs: dict
             ) -> tuple[list[tuple[dict | DataError, str]], str, bool]:
    """(record or DataError, where) of every line of a local file, or of every record of a
    `datasets` source (a hub name, or a local folder of data files); the prefix of their ids;
    whether it was a local file."""
    path = Path(name_or_path)
    if path.is_file():
        stem = Path(path.name.removesuffix(".gz")).stem  # train.jsonl.gz -> train
        return _read_lines(path), stem, True
    from datasets import load_dataset

    records = list(load_dataset(str(name_or_path), split=split, **load_kwargs))
    places = [f"{name_or_path} ({split}), record {i}" for i in range(len(records))]
    return list(zip(records, places)), split, False


def _of_split(lines: list[tuple], split: str, source) -> list[tuple]:
    """The lines of a summarize-from-feedback file whose record is of `split` by its own
    "split" field ("train", "valid1", "valid2"; "validation" takes both valid ones, like the
    hub's split). Unreadable lines and records without the field stay: they are checked later.
    A "split" that is not a string names no split (it would slip into every one): the line
    stays as its DataError."""
    wanted = {split, "valid1", "valid2"} if split == "validation" else {split}
    kept = []
    for record, where, i in lines:
        if isinstance(record, dict) and not isinstance(record.get("split", ""), str):
            record = DataError(f"{where}: field 'split' should be str (\"train\", \"valid1\" or "
                               f"\"valid2\"), got {type(record['split']).__name__} "
                               f"{record['split']!r}")
        if isinstance(record, DataError) or "split" not in record or record["split"] in wanted:
            kept.append((record, where, i))
    if not kept:  # every line is then a record with a split field
        found = sorted({record["split"] for record, *_ in lines})
        raise DataError(f"{source}: no records of split {split!r}; its records' splits: {found}")
    return kept


def _load(convert: Callable[[dict, str, str], dict], name_or_path: str | Path, split: str,
          skip_invalid: bool, by_split: bool = False, **load_kwargs) -> list[dict]:
    """The records of a local JSON-lines file (errors name its lines) or of a `datasets`
    source (errors name the record), converted; `by_split`: a local file's records of other
    splits are left out first (`_of_split`)."""
    lines, id_prefix, local = _records(name_or_path, split, load_kwargs)
    # ids count every line, so a record has the same id whichever split is asked for
    lines = [(record, where, i) for i, (record, where) in enumerate(lines)]
    if by_split and local:
        lines = _of_split(lines, split, name_or_path)
    rankings, places, errors = [], [], []
    for record, where, i in lines:
        try:
            if isinstance(record, DataError):  # a line that is not a JSON object
                raise record
            rankings.append(convert(record, where, f"{id_prefix}-{i}"))
            places.append(where)
        except DataError as e:
            if not skip_invalid:
                raise
            errors.append(str(e))
    if errors:
        warnings.warn(f"skipped {len(errors)} of {len(lines)} invalid records; first: "
                      + " | ".join(errors[:3]))
    if not rankings:
        raise DataError(f"{name_or_path}: no valid records")
    _warn_identical(rankings, places)
    return rankings


def _warn_identical(rankings: list[dict], places: list[str]) -> None:
    """Warn of pairs whose two responses are the same text: kept (a data set is what it is),
    but they carry no preference, so the RM learns nothing from them and can only tie them."""
    same = [where for r, where in zip(rankings, places) if r["responses"][0] == r["responses"][1]]
    if same:
        warnings.warn(f"{len(same)} of {len(rankings)} pairs have identical chosen and rejected "
                      f"responses (first: {same[0]}); they carry no preference signal")


def load_hh_rlhf(name_or_path: str | Path = "Anthropic/hh-rlhf", split: str = "train",
                 skip_invalid: bool = False, **load_kwargs) -> list[dict]:
    """HH-RLHF pairs as K = 2 rankings: a local .jsonl file (or .jsonl.gz, as the hub ships
    them; `split` is then unused: one file, one split), or a `datasets` source (e.g. the
    hub's "Anthropic/hh-rlhf", with data_dir="harmless-base" for one subset; split "train" or
    "test", slices like "train[:1000]" work). load_kwargs go to `datasets.load_dataset`."""
    return _load(hh_rlhf_ranking, name_or_path, split, skip_invalid, **load_kwargs)


def load_summarize_feedback(name_or_path: str | Path = "openai/summarize_from_feedback",
                            split: str = "train", skip_invalid: bool = False, **load_kwargs
                            ) -> list[dict]:
    """Summarize-from-feedback comparisons as K = 2 rankings: a local file in OpenAI's
    comparisons format (JSON lines, plain or gzip), only its records of `split` ("train",
    "valid1", "valid2" or "validation": both), or a `datasets` source (the hub's
    "openai/summarize_from_feedback" with name="comparisons"; splits "train", "validation")."""
    if not Path(name_or_path).is_file() and str(name_or_path) == "openai/summarize_from_feedback":
        load_kwargs.setdefault("name", "comparisons")
    return _load(summarize_ranking, name_or_path, split, skip_invalid, by_split=True,
                 **load_kwargs)


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


# ----------------------------------------------------------------------------- the splits
PARTS = ("train", "validation", "gold_train", "gold_validation", "heldout")


@dataclass(frozen=True)
class PreferenceData:
    """Which HH-RLHF source a real-data preset reads and how it divides it (`split_comparisons`).

    Part of the recipe of every stage that reads it (`PreferenceSource.recipe`), so a
    checkpoint records where its data came from and another source makes it stale. `digest`
    (computed, not set) is the content of a local source file: another file copied over the
    same path makes the checkpoints stale too. A hub name is recorded as the name only.
    """
    # a local HH-RLHF JSONL file (.gz or not) or a hub name
    source: str = rule("Anthropic/hh-rlhf", text())
    split: str = rule("train", text())  # the hub split to read (a local file is one split)
    # N records of random prompts (a quicker run); None: all
    max_records: int | None = rule(None, optional(integer(1)))
    # prompts kept for the evaluation: no stage trains on them
    heldout_prompts: int = rule(256, integer(1))
    # share of the other prompts whose comparisons only the gold RM sees
    gold_fraction: float = rule(0.5, number(0, 1, low_open=True, high_open=True))
    # of each half: prompts that measure its reward model
    validation_fraction: float = rule(0.05, number(0, 1, low_open=True, high_open=True))
    # a pair is kept when prompt + response + eos fit, for both responses; with PPO's
    # max_new_tokens it must fit the model's context (GPT-2: 1024)
    max_tokens: int = rule(512, integer(2))
    seed: int = rule(0, integer(0))  # the shuffle of the prompts that divides them
    # a local file's content ("" for a hub name), computed
    digest: str = dataclasses.field(init=False, default="", metadata={"rule": text()})

    def __post_init__(self):
        object.__setattr__(self, "digest", file_digest(self.source))
        check_config(self)


def file_digest(source: str) -> str:
    """A short SHA-256 of a local file's bytes ("" for a hub name or a missing file), hashed
    once per version of the file (its size and modification time)."""
    path = Path(source)
    if not path.is_file():
        return ""
    return _digest(path.resolve(), path.stat().st_size, path.stat().st_mtime_ns)


@lru_cache(maxsize=8)
def _digest(path: Path, size: int, mtime_ns: int) -> str:
    return file_sha256(path)[:16]


@lru_cache(maxsize=4)
def _read(source: str, split: str, stamp: tuple | None) -> tuple[dict, ...]:
    """The source's rankings, read once per process (every stage reads the same file); `stamp`
    (a local file's size and mtime) makes an edited file be read again."""
    return tuple(load_hh_rlhf(source, split))


def split_comparisons(data: PreferenceData, tokenizer) -> dict[str, list[dict]]:
    """The rankings of `data.source` divided by prompt into `PARTS` (module docstring).

    The prompts are shuffled with `data.seed` (the same split on every machine), and every
    part lists its comparisons in that order: a data set sorted by subset (the hub's HH-RLHF
    starts with its harmless-base dialogues) gives a random sample to `max_records` and to
    the first N of a part. The first `heldout_prompts` are held out, then `gold_fraction` of
    the rest go to the gold half; `validation_fraction` of each half validate its reward
    model. Pairs that do not fit in `data.max_tokens` tokens are then left out of every part
    (`fitting`), with a warning that counts them per part (`too_long` returns the counts). A
    DataError names the source when a part is empty.
    """
    parts, _ = _divided(data, tokenizer)
    return {name: list(records) for name, records in parts.items()}  # the caller's own


def too_long(data: PreferenceData, tokenizer) -> dict[str, int]:
    """How many comparisons of each part `split_comparisons` left out as longer than
    `data.max_tokens` tokens."""
    return dict(_divided(data, tokenizer)[1])


def too_long_note(left_out: dict[str, int], sizes: dict[str, int], max_tokens: int) -> str:
    """The left-out comparisons in words, per part ("of" the part before they were left out);
    `sizes`: the parts' sizes after."""
    each = ", ".join(f"{name} {left_out[name]:,} of {left_out[name] + sizes[name]:,}"
                     for name in PARTS)
    return (f"{sum(left_out.values()):,} of {sum(left_out.values()) + sum(sizes.values()):,} "
            f"comparisons longer than {max_tokens} tokens (prompt + response + eos) were left "
            f"out: {each}")


def _divided(data: PreferenceData, tokenizer) -> tuple[dict[str, list[dict]], dict[str, int]]:
    """The parts and the left-out counts, computed once per process for a source, recipe and
    tokenizer (its name and size): the stages of a pipeline would otherwise each tokenize the
    whole data set again (and warn of the same left-out pairs)."""
    path = Path(data.source)
    stamp = (path.stat().st_size, path.stat().st_mtime_ns) if path.is_file() else None
    key = (data, stamp, tokenizer.name_or_path, len(tokenizer))  # a reloaded tokenizer hits
    if key not in _splits:
        if len(_splits) >= 4:  # a few sources or recipes at a time
            _splits.clear()
        _splits[key] = _split(data, stamp, tokenizer)
    return _splits[key]


# _divided's results in this process
_splits: dict[tuple, tuple[dict[str, list[dict]], dict[str, int]]] = {}


def _split(data: PreferenceData, stamp: tuple | None, tokenizer
           ) -> tuple[dict[str, list[dict]], dict[str, int]]:
    rankings = _read(data.source, data.split, stamp)
    prompts = list(dict.fromkeys(r["prompt"] for r in rankings))  # each prompt once
    random.Random(data.seed).shuffle(prompts)
    rank = {prompt: i for i, prompt in enumerate(prompts)}
    # stable: the comparisons of one prompt stay in file order
    rankings = sorted(rankings, key=lambda r: rank[r["prompt"]])[: data.max_records]
    prompts = list(dict.fromkeys(r["prompt"] for r in rankings))
    if len(prompts) <= data.heldout_prompts:
        raise DataError(f"{data.source}: {len(prompts)} distinct prompts, not enough to hold "
                        f"out {data.heldout_prompts} and train on the others")
    held, rest = prompts[: data.heldout_prompts], prompts[data.heldout_prompts:]
    n_gold = round(len(rest) * data.gold_fraction)
    part_of = dict.fromkeys(held, "heldout")
    for half, names in ((rest[n_gold:], ("validation", "train")),
                        (rest[:n_gold], ("gold_validation", "gold_train"))):
        n_val = max(1, round(len(half) * data.validation_fraction))
        part_of.update({p: names[0] for p in half[:n_val]} | {p: names[1] for p in half[n_val:]})
    parts, left_out = {name: [] for name in PARTS}, {}
    for r in rankings:
        parts[part_of[r["prompt"]]].append(r)
    for name in PARTS:
        parts[name], left_out[name] = fitting(parts[name], tokenizer, data.max_tokens)
        if not parts[name]:
            raise DataError(f"{data.source}: no comparisons in part {name!r} of "
                            f"{len(rankings)} records that fit {data.max_tokens} tokens; use "
                            "more records, other fractions or a larger max_tokens")
    if any(left_out.values()):
        sizes = {name: len(records) for name, records in parts.items()}
        warnings.warn(f"{data.source}: {too_long_note(left_out, sizes, data.max_tokens)}; a "
                      "larger max_tokens keeps them (up to the model's context)")
    return parts, left_out


def prompt_records(rankings: list[dict]) -> list[dict]:
    """The distinct prompts of `rankings` as prompt records {"id", "prompt"} (what PPO and
    `generation.complete` sample from), each named by its first ranking's id."""
    first = {}
    for r in rankings:
        first.setdefault(r["prompt"], r["prompt_id"])
    return [{"id": prompt_id, "prompt": prompt} for prompt, prompt_id in first.items()]
