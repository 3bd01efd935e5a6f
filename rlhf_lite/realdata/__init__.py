"""Real human preference data (the gpt2-hh preset): everything the toy world does not need.

- `preference_data`: HH-RLHF and summarize-from-feedback pairs as rankings, divided by prompt;
- `source`: the data set as the stages' data source, and the gold reward model stage;
- `gold_eval`: the policies judged by that gold reward model.
"""
from .preference_data import PreferenceData
from .source import PreferenceRewardConfig, PreferenceSource, build_gold

__all__ = ["PreferenceData", "PreferenceRewardConfig", "PreferenceSource", "build_gold"]
