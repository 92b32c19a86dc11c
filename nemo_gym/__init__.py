"""nemo_gym: build RL environments for LLM agents and collect scored rollouts from them.

A NeMo Gym-compatible toolkit: the same config shape, endpoints, row formats and `ng_*` commands,
built to stay fast at high concurrency, never lose work, and run fully offline.
"""

import pathlib

__version__ = "0.1.0"

# As in NeMo Gym: the package directory and the directory that holds it (the project checkout, for
# a source install), which environments use to find their own files.
ROOT_DIR = pathlib.Path(__file__).absolute().parent
PARENT_DIR = ROOT_DIR.parent
