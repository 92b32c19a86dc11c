"""The local model's thread count comes from the cores really granted and the number of instances
(issue 18 part 6). cgroup files are planted under tmp_path; no timing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from responses_api_models.local_model import cpu_threads
from responses_api_models.local_model.cpu_threads import available_cores, cgroup_cpu_limit, plan_threads


def plant(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_a_cgroup_v2_quota_is_read_in_cores(tmp_path):
    plant(tmp_path, {"proc_cgroup": "0::/job\n", "fs/job/cpu.max": "150000 100000\n"})
    assert cgroup_cpu_limit(tmp_path / "fs", tmp_path / "proc_cgroup") == 1.5


def test_the_tightest_quota_along_the_ancestors_wins(tmp_path):
    plant(
        tmp_path,
        {
            "proc_cgroup": "0::/outer/inner\n",
            "fs/cpu.max": "max 100000\n",
            "fs/outer/cpu.max": "100000 100000\n",
            "fs/outer/inner/cpu.max": "max 100000\n",
        },
    )
    assert cgroup_cpu_limit(tmp_path / "fs", tmp_path / "proc_cgroup") == 1.0


def test_no_quota_or_no_cgroup_files_means_no_limit(tmp_path):
    plant(tmp_path, {"proc_cgroup": "0::/\n", "fs/cpu.max": "max 100000\n"})
    assert cgroup_cpu_limit(tmp_path / "fs", tmp_path / "proc_cgroup") is None
    assert cgroup_cpu_limit(tmp_path / "fs", tmp_path / "missing") is None


def test_a_cgroup_v1_cfs_quota_is_read_and_minus_one_is_no_limit(tmp_path):
    plant(
        tmp_path,
        {
            "proc_cgroup": "4:memory:/x\n2:cpu,cpuacct:/x\n",
            "fs/cpu,cpuacct/x/cpu.cfs_quota_us": "300000\n",
            "fs/cpu,cpuacct/x/cpu.cfs_period_us": "100000\n",
            "fs/cpu,cpuacct/cpu.cfs_quota_us": "-1\n",
            "fs/cpu,cpuacct/cpu.cfs_period_us": "100000\n",
        },
    )
    assert cgroup_cpu_limit(tmp_path / "fs", tmp_path / "proc_cgroup") == 3.0


def test_available_cores_is_the_affinity_capped_by_the_quota(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5, 6, 7}, raising=False)
    plant(tmp_path, {"proc_cgroup": "0::/c\n", "fs/c/cpu.max": "250000 100000\n"})
    assert available_cores(tmp_path / "fs", tmp_path / "proc_cgroup") == 2
    plant(tmp_path, {"fs/c/cpu.max": "50000 100000\n"})  # half a core still gets one thread
    assert available_cores(tmp_path / "fs", tmp_path / "proc_cgroup") == 1
    plant(tmp_path, {"fs/c/cpu.max": "max 100000\n"})
    assert available_cores(tmp_path / "fs", tmp_path / "proc_cgroup") == 8


def test_affinity_narrower_than_the_machine_is_what_counts(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {3}, raising=False)
    assert available_cores(tmp_path / "fs", tmp_path / "none") == 1


@pytest.mark.parametrize(
    ("cores", "instances", "threads"),
    [(2, 1, 1), (1, 1, 1), (4, 1, 3), (8, 2, 3), (8, 4, 1), (2, 3, 1), (16, 1, 15)],
)
def test_default_threads_leave_a_core_for_the_stack_and_split_between_instances(cores, instances, threads):
    plan = plan_threads(None, cores=cores, instances=instances)
    assert plan.threads == threads and plan.warning is None


def test_configured_threads_are_kept_and_oversubscription_warns_in_one_line():
    assert plan_threads(2, cores=2, instances=1) == cpu_threads.ThreadPlan(2, None)
    plan = plan_threads(2, cores=2, instances=2)
    assert plan.threads == 2
    assert plan.warning is not None and "\n" not in plan.warning
    assert "n_threads=2" in plan.warning and "4 threads on 2 available core(s)" in plan.warning
    assert plan_threads(4, cores=2).warning is not None


def test_the_engine_loads_with_the_planned_threads(monkeypatch):
    """The engine hands llama.cpp the planned count (the loader is replaced: loading real weights here
    only to read a number back made this test hang now and then on a busy machine)."""
    pytest.importorskip("xllamacpp", reason="the local model needs `pip install -e .[local]`")
    from responses_api_models.local_model import engine as engine_module

    loaded: list[int] = []

    def fake_load(path, *, n_ctx, n_parallel, n_threads):
        loaded.append(n_threads)
        raise RuntimeError("stop after the thread count")

    monkeypatch.setattr(engine_module, "available_cores", lambda: 2)
    monkeypatch.setattr(engine_module, "_load_server", fake_load)
    for configured, instances in [(None, 1), (2, 2)]:
        with pytest.raises(RuntimeError, match="stop after the thread count"):
            engine_module.LocalChatEngine(n_ctx=64, n_parallel=1, n_threads=configured, n_instances=instances)
    assert loaded == [1, 2]  # the default leaves a core for the stack; a configured count is kept
