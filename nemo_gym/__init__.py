"""nemo_gym: build RL environments for LLM agents and collect scored rollouts from them.

A NeMo Gym-compatible toolkit: the same config shape, endpoints, row formats and `ng_*` commands,
built to stay fast at high concurrency, never lose work, and run fully offline.
"""

__version__ = "0.1.0"
