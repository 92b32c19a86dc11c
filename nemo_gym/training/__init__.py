"""Stored rollout rows -> the shapes RL and SFT trainers read (TRL, veRL, NeMo RL, SkyRL, chat messages).

Pure functions per format live in `formats`; `export.export_file` streams a rollouts file through one of
them with the dropping rules (incomplete groups, cut-off episodes, low reward). In-process, for a
trainer's loop: `collect.collect_groups` (whole GRPO groups from a running stack, already in a format)
and `trl_rollout.NemoGymRolloutFunc` (TRL GRPOTrainer's `rollout_func`); `policy_server.PolicyServer` serves
the model being trained to the stack (vLLM's token-in API), so those rollouts are on-policy (it needs torch
only when it generates). Floor 3: imports
nemo_gym.rollouts, config, errors; only the CLI (and trainers' scripts) import this package.
"""

from nemo_gym.training.collect import Group, collect_groups, collect_groups_sync
from nemo_gym.training.export import ExportOptions, ExportSummary, export_file
from nemo_gym.training.formats import FORMATS, to_messages, to_nemo_rl, to_skyrl, to_trl, to_verl
from nemo_gym.training.policy_server import PolicyServer
from nemo_gym.training.trl_rollout import NemoGymRolloutFunc, environment_reward, prompt_messages, trl_dataset
from nemo_gym.training.turns import TokenSequence, Turn, token_sequence, turns_of

__all__ = [
    "FORMATS",
    "ExportOptions",
    "ExportSummary",
    "Group",
    "NemoGymRolloutFunc",
    "PolicyServer",
    "TokenSequence",
    "Turn",
    "collect_groups",
    "collect_groups_sync",
    "environment_reward",
    "export_file",
    "prompt_messages",
    "to_messages",
    "to_nemo_rl",
    "to_skyrl",
    "to_trl",
    "to_verl",
    "token_sequence",
    "trl_dataset",
    "turns_of",
]
