"""Both backends of nemo_gym.compute hold a job to the same bounds and fail with the same errors.

Every test runs against the local pool and against Ray tasks on a real two-node loopback cluster."""

from __future__ import annotations

import pytest

from nemo_gym.compute import RAY_ADDRESS_ENV, ComputeSettings, open_executor
from nemo_gym.errors import ComputeTimeoutError, ComputeWorkerDiedError
from nemo_gym.sandbox import SandboxLimits
from nemo_gym.testing import compute_jobs

pytestmark = pytest.mark.slow  # worker processes, and a Ray cluster for the second half


@pytest.fixture(params=["local", "ray"])
async def executor(request, monkeypatch):
    if request.param == "ray":
        monkeypatch.setenv(RAY_ADDRESS_ENV, request.getfixturevalue("ray_cluster").address)
    else:
        monkeypatch.delenv(RAY_ADDRESS_ENV, raising=False)
    executor = open_executor(
        ComputeSettings(max_concurrent=1, timeout_s=20, memory_mb=512, allow_weaker_isolation=True)
    )
    assert executor.backend == request.param
    await executor.start()
    yield executor
    await executor.aclose()


async def test_results_and_the_jobs_own_errors_come_back_unchanged(executor):
    assert await executor.submit(compute_jobs.add, 2, 3) == 5
    with pytest.raises(ValueError, match="^bad input$"):  # not wrapped in a backend's exception type
        await executor.submit(compute_jobs.refuse, "bad input")


async def test_a_missed_deadline_kills_the_job_and_the_next_job_still_runs(executor):
    with pytest.raises(ComputeTimeoutError, match="its 1 s deadline"):
        await executor.submit(compute_jobs.sleep_then_return, 60, "late", timeout_s=1)
    assert await executor.submit(compute_jobs.sleep_then_return, 0, "on time", timeout_s=30) == "on time"


async def test_a_dead_worker_is_retried_once_then_reported_and_the_next_job_still_runs(executor):
    with pytest.raises(ComputeWorkerDiedError, match="died"):
        await executor.submit(compute_jobs.die)
    assert await executor.submit(compute_jobs.add, 1, 1) == 2


async def test_the_memory_limit_raises_memory_error(executor):
    with pytest.raises(MemoryError):
        await executor.submit(compute_jobs.allocate_mb, 2048)
    assert await executor.submit(compute_jobs.allocate_mb, 16) == 16 * 1024 * 1024


async def test_sandboxed_code_runs_with_the_limits_it_was_given(executor):
    echoed = await executor.run_python("print(input()[::-1])", stdin="olleh\n", limits=SandboxLimits())
    assert echoed.ok and echoed.stdout == "hello\n"
    looping = await executor.run_python("while True:\n    pass", limits=SandboxLimits(wall_timeout_s=1, cpu_time_s=5))
    assert looping.timed_out and "limit 1 s" in (looping.describe_error() or "")


async def test_a_lost_ray_worker_is_retried_once_then_reported(ray_cluster, monkeypatch):
    # Ray only: the job kills the Ray worker running it (as a node loss would), on the retry too.
    monkeypatch.setenv(RAY_ADDRESS_ENV, ray_cluster.address)
    executor = open_executor(ComputeSettings(max_concurrent=1, timeout_s=20))
    await executor.start()
    try:
        with pytest.raises(ComputeWorkerDiedError, match="Ray worker running the job was lost"):
            await executor.submit(compute_jobs.kill_parent_then_die)
        assert await executor.submit(compute_jobs.add, 20, 22) == 42
    finally:
        await executor.aclose()
