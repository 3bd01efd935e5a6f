"""The shared evaluation: rows per model, their results.json layout, the one table renderer."""
import pandas as pd

from rlhf_lite import judges
from rlhf_lite.generation import Completion


def test_by_column_lays_rows_out_by_key_and_keeps_keys_only_some_rows_have():
    rows = {"SFT": {"params": 10, "kl_to_sft": 0.0},
            "best-of-4 (RM)": {"params": 10, "kl_to_sft": 0.5, "best_of_n_kl_bound": 0.64}}
    assert judges.by_column(rows) == {"params": {"SFT": 10, "best-of-4 (RM)": 10},
                                      "kl_to_sft": {"SFT": 0.0, "best-of-4 (RM)": 0.5},
                                      "best_of_n_kl_bound": {"best-of-4 (RM)": 0.64}}


def test_markdown_table_formats_each_model_and_writes_n_a_for_missing_values():
    results = judges.by_column({
        "base": {"params": 1234, "win_rate_vs_sft": 0.5, "win_rate_ci": [0.25, 0.75],
                 "kl_to_sft": None},
        "PPO": {"params": 99, "win_rate_vs_sft": 0.625, "win_rate_ci": [0.5, 0.75],
                "kl_to_sft": 1.234}})
    lines = judges.markdown_table(results, {
        "parameters": "{params:,}",
        "win rate (95% CI)": "{win_rate_vs_sft:.1%} ({win_rate_ci[0]:.1%}-{win_rate_ci[1]:.1%})",
        "KL": "{kl_to_sft:.2f}"})
    assert lines == ["| model | parameters | win rate (95% CI) | KL |", "|---|---|---|---|",
                     "| base | 1,234 | 50.0% (25.0%-75.0%) | n/a |",
                     "| PPO | 99 | 62.5% (50.0%-75.0%) | 1.23 |"]


class CoinJudge:
    """Wins the even completions: a judge with known verdicts."""

    def judge(self, prompts, completions):
        wins = [float(i % 2 == 0) for i in range(len(completions))]
        return pd.DataFrame({"win": wins}), {"mean_length": 3.0}


def test_policy_row_holds_the_judges_verdict_and_the_callers_numbers(monkeypatch):
    monkeypatch.setattr(judges, "score_responses",
                        lambda rm, tok, prompts, texts, ended: pd.Series([1.0, 2.0, 3.0, 6.0]))
    prompts = [{"id": f"p{i}", "prompt": "q"} for i in range(4)]
    completions = [Completion("a", True), Completion("b", True), Completion("c", False),
                   Completion("d", True)]
    row = judges.policy_row(CoinJudge(), prompts, completions, None, None, params=7, kl=0.25,
                            seconds=2.0)
    assert row["win_rate_vs_sft"] == 0.5 and row["mean_length"] == 3.0
    assert row["rm_score"] == 3.0 and row["kl_to_sft"] == 0.25 and row["seconds"] == 2.0
    low, high = row["win_rate_ci"]
    assert 0 <= low < 0.5 < high <= 1 and row["params"] == 7
    assert list(row["tables"].win) == [1.0, 0.0, 1.0, 0.0]
