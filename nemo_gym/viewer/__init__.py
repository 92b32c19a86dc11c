"""The rollout viewer: a FastAPI app over a paged, indexed rollouts file, and one static page.

    from nemo_gym.viewer import RolloutIndex, ViewerRuns, build_viewer_app
    app = build_viewer_app(ViewerRuns(RolloutIndex("results/run.jsonl")))

`ng_viewer +jsonl_fpath=results/run.jsonl` serves it on 127.0.0.1.
"""

from nemo_gym.viewer.app import ViewerRuns, build_viewer_app
from nemo_gym.viewer.index import RolloutIndex, RowQuery

__all__ = ["RolloutIndex", "RowQuery", "ViewerRuns", "build_viewer_app"]
