"""Stored rollout rows -> the shapes RL and SFT trainers read (TRL, veRL, NeMo RL, SkyRL, chat messages).

Pure functions per format live in `formats`; `export.export_file` streams a rollouts file through one of
them with the dropping rules (incomplete groups, cut-off episodes, low reward). Floor 3: imports
nemo_gym.rollouts, config, errors; only the CLI imports this package.
"""

from nemo_gym.training.export import ExportOptions, ExportSummary, export_file
from nemo_gym.training.formats import FORMATS, to_messages, to_nemo_rl, to_skyrl, to_trl, to_verl
from nemo_gym.training.turns import TokenSequence, Turn, token_sequence, turns_of

__all__ = [
    "FORMATS",
    "ExportOptions",
    "ExportSummary",
    "TokenSequence",
    "Turn",
    "export_file",
    "to_messages",
    "to_nemo_rl",
    "to_skyrl",
    "to_trl",
    "to_verl",
    "token_sequence",
    "turns_of",
]
