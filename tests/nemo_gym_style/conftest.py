"""NeMo Gym runs an environment's tests from its folder, so `from app import ...` works there; the
folders under envs/ get the same here."""

import sys
from pathlib import Path

for folder in sorted((Path(__file__).parent / "envs").iterdir()):
    if (folder / "app.py").exists() and str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

# capital_quiz's tests import it as `resources_servers.capital_quiz.app`, where NeMo Gym's folders live:
# test_end_to_end.py runs them there, from the folder, with ng_test.
collect_ignore_glob = ["envs/capital_quiz/tests/*"]
