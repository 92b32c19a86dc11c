"""Every exception the toolkit raises on purpose, under one root.

The tree, grouped by what the caller can do about it:

    NemoGymError
    ├── InputError                  the user's input or config is wrong: fix it (exit code 2)
    │   ├── ConfigError                 merged config is invalid
    │   │   ├── ConfigFileNotFoundError     a config_paths entry or env.yaml path does not exist
    │   │   ├── ConfigSyntaxError           YAML that does not parse (file, line, column)
    │   │   ├── ConfigOverrideError         a CLI override that is not `+key=value` shaped
    │   │   ├── UnknownParameterError       a key no command, server or interpolation reads (a typo)
    │   │   ├── MissingConfigValueError     `???` values left unset
    │   │   ├── ConfigInterpolationError    `${...}` that points nowhere
    │   │   ├── ServerRefNotFoundError      a server ref names no configured instance
    │   │   ├── AlmostServerError           a server-shaped block that fails validation
    │   │   ├── PortConflictError           two servers asked for one port
    │   │   ├── NoServerInstancesError      nothing to start
    │   │   └── ModelChoiceError            a `+model=` naming no known provider, lacking its key or address, or a second policy
    │   ├── InputDataError              a malformed input JSONL line (file, line, field)
    │   ├── OutputExistsError           output file exists and neither resume nor overwrite was asked
    │   ├── OutputLockedError           another collector is writing the same output file (names its PID)
    │   ├── OutputIsInputError          the output (or one of its side files) is the input file, under any name
    │   ├── OutputPathError             the output's folder cannot be one: a file stands where a folder must be
    │   ├── JobMismatchError            a resume whose job (input, limit, repeats, ...) differs from the file's
    │   ├── UnknownServerError          a server name (e.g. agent_name) that the head server does not know
    │   ├── TrainingDataError           rollouts that cannot take a trainer's shape (no token ids, a broken prefix)
    │   └── RequestTooLargeError        a request body over the server's `max_request_body_bytes` (HTTP 413)
    ├── TransportError              the network let us down; worth retrying
    │   ├── ServerUnreachableError      connection refused (`connect_failed`) / reset / DNS
    │   │   └── ReplicaGoneError            the replica a rollout is pinned to refused; its siblings live on
    │   └── RequestTimeoutError         connect or read deadline passed
    ├── HTTPStatusError             a server answered with an error status (carries status_code, body)
    ├── InvalidResponseError        a server answered 2xx with a body we cannot use (names the field)
    │   └── ResponseTooLargeError       a body over the reader's cap (names the URL and the cap); never retried
    ├── RolloutFailedError          one rollout failed after its retry budget
    │   ├── AgentReportedFailureError   the agent's row says the rollout failed (NeMo Gym's `_ng_failure_class`)
    │   └── IncompleteGroupsError       a GRPO group lost a member after every attempt (names the tasks)
    ├── ServerStartupError          a server process died or never became healthy
    ├── ClusterUnreachableError     `ray_address` names no Ray cluster we can reach
    ├── ServerGoneError             a server stopped answering mid-collection (circuit breaker tripped)
    ├── OutputWriteError            the OS refused a write to an output file (disk full, read-only)
    ├── RequirementsInstallError    `+install_requirements=true` ran pip and pip failed
    ├── SandboxError                model-written code could not be run in the sandbox
    │   ├── SandboxProviderUnavailableError  a container-sandbox provider (NeMo Gym's docker, ...) is not here
    │   └── SandboxCreateError              a container-sandbox provider could not create a sandbox
    └── ComputeError                offloaded CPU work (nemo_gym.compute) could not run: e.g. the cluster is unreachable
        ├── ComputeTimeoutError         one job missed its deadline; its worker was killed
        └── ComputeWorkerDiedError      the worker (or the cluster node) running a job died, twice in a row

Exit codes for CLI entry points: InputError -> 2, every other NemoGymError -> 1.
Whether a failure is worth another attempt is decided in one place, `nemo_gym.retry`.
"""

from __future__ import annotations

from typing import Any


class NemoGymError(Exception):
    """Root of every error this toolkit raises deliberately."""

    exit_code: int = 1


class InputError(NemoGymError):
    """The user's input (config, CLI, data file) is wrong; fixing it is the user's move."""

    exit_code = 2


class ConfigError(InputError):
    """The merged configuration is invalid."""


class ConfigFileNotFoundError(ConfigError):
    """A config file was asked for but found in none of the searched places."""


class ConfigSyntaxError(ConfigError):
    """A YAML file failed to parse."""


class ConfigOverrideError(ConfigError):
    """A command-line override is malformed."""


class UnknownParameterError(ConfigError):
    """A parameter that nothing reads, most likely a typo (`+num_repeat=2` for `+num_repeats=2`)."""


class MissingConfigValueError(ConfigError):
    """One or more mandatory (`???`) values were never set."""


class ConfigInterpolationError(ConfigError):
    """A `${...}` interpolation refers to a key that does not exist."""


class ServerRefNotFoundError(ConfigError):
    """A `{type, name}` server ref names no configured instance of that type."""


class AlmostServerError(ConfigError):
    """A block shaped like a server instance failed validation."""


class PortConflictError(ConfigError):
    """Two server instances were configured on the same host and port."""


class NoServerInstancesError(ConfigError):
    """The config defines no server instance to start."""


class ModelChoiceError(ConfigError):
    """`+model=` names no known provider, lacks the key or address its provider needs, or meets a
    config that already defines `policy_model`."""


class InputDataError(InputError):
    """A line of an input JSONL file is malformed."""

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None, field: str | None = None):
        self.path, self.line, self.field = path, line, field
        where = ":".join(str(p) for p in (path, line) if p is not None)
        prefix = f"{where}: " if where else ""
        suffix = f" (field `{field}`)" if field else ""
        super().__init__(f"{prefix}{message}{suffix}")


class OutputExistsError(InputError):
    """The output file exists; refusing to overwrite or append without being told to."""


class OutputLockedError(InputError):
    """Another process holds the lock on the output file; two writers would interleave rows."""

    def __init__(self, message: str, *, path: str, pid: int | None = None):
        self.path, self.pid = path, pid
        super().__init__(message)


class OutputPathError(InputError):
    """The output cannot go where it was asked to: a part of its folder path is a file, not a folder."""

    def __init__(self, message: str, *, path: str):
        self.path = path
        super().__init__(message)


class OutputIsInputError(InputError):
    """The output file, or a side file written beside it, is the input file (the same path, a symlink to
    it or a hard link): writing it would destroy the tasks the run reads."""

    def __init__(self, message: str, *, path: str, input_path: str):
        self.path, self.input_path = path, input_path
        super().__init__(message)


class JobMismatchError(InputError):
    """`resume` was asked for an output file that belongs to a different job."""

    def __init__(self, message: str, *, field: str):
        self.field = field
        super().__init__(message)


class UnknownServerError(InputError):
    """A server instance name that is not running / not configured."""


class TrainingDataError(InputError):
    """Rollout rows cannot be put in a trainer's shape: no token ids (the model server was not asked for
    them), a partial bundle, or turns that break the prefix invariant. The message names the rollout."""


class RequestTooLargeError(InputError):
    """A request body is larger than the receiving server accepts."""

    def __init__(self, message: str, *, limit_bytes: int):
        self.limit_bytes = limit_bytes
        super().__init__(message)


class RequirementsNotInstalledError(InputError):
    """An environment folder's requirements.txt names packages that are not installed here (the message
    names the folder, the packages and the pip command that installs them)."""


class TransportError(NemoGymError):
    """A request failed below HTTP (connection or deadline); usually worth retrying."""


class ServerUnreachableError(TransportError):
    """Could not connect to, or lost the connection with, a server."""

    def __init__(self, message: str, *, connect_failed: bool = False):
        self.connect_failed = connect_failed
        """True when the connection was never made (refused): the request was not delivered."""
        super().__init__(message)


class ReplicaGoneError(ServerUnreachableError):
    """The replica that holds a rollout's state refused the connection while other replicas of the
    same server live: the rollout must start again (the collector retries it), and the run goes on.
    Its message says "connection to", never "cannot connect to": the collector's circuit breaker
    counts only the latter, which is what a server with no live replica left produces."""


class RequestTimeoutError(TransportError):
    """A connect or read deadline passed."""

    def __init__(self, message: str, *, connect_timed_out: bool = False):
        self.connect_timed_out = connect_timed_out
        """True when no connection was made in time (a peer that is down, not slow): nothing was delivered."""
        super().__init__(message)


class HTTPStatusError(NemoGymError):
    """A server answered with an error status code."""

    def __init__(self, message: str, *, status_code: int, body: str = "", retry_after: float | None = None):
        self.status_code = status_code
        self.body = body
        self.retry_after = retry_after
        super().__init__(message)


class InvalidResponseError(NemoGymError):
    """A server answered 2xx but the body is not what the contract promises."""


class ResponseTooLargeError(InvalidResponseError):
    """A server answered with a body larger than the reader accepts. It was refused from its
    Content-Length, or reading stopped at the cap: the whole body was never held. Not worth another
    attempt (the same request gets the same body), so servers relay it as 424, not 502."""

    def __init__(self, message: str, *, url: str, limit_bytes: int):
        self.url, self.limit_bytes = url, limit_bytes
        super().__init__(message)


class JudgeError(InvalidResponseError):
    """A call to a judge model failed (unreachable, an error status, or an answer of the wrong shape).

    A failed judge is not a wrong answer: a server answers it as 502, so the collector retries the
    rollout and then records it in the failures file, never as reward 0."""


class RolloutFailedError(NemoGymError):
    """A rollout failed after exhausting its attempts."""


class AgentReportedFailureError(RolloutFailedError):
    """The agent answered `/run` with a row that says the rollout failed (NeMo Gym's `_ng_failure_class`,
    or `_ng_no_persist` for a rollout that was killed). The agent has decided: not retried in this run."""

    def __init__(self, message: str, *, markers: dict[str, Any], terminal: bool, persist: bool):
        self.markers, self.terminal, self.persist = markers, terminal, persist
        super().__init__(message)


class IncompleteGroupsError(RolloutFailedError):
    """In-process group collection (`nemo_gym.training.collect_groups`): some groups lost a member after
    every attempt. `groups` holds every group of the batch, complete or not, so a caller can still use
    the complete ones."""

    def __init__(self, message: str, *, groups: list):  # type: ignore[type-arg]
        self.groups = groups
        super().__init__(message)


class ServerStartupError(NemoGymError):
    """A server process exited during startup or never became healthy."""


class ClusterUnreachableError(NemoGymError):
    """`ray_address` was well formed but no Ray cluster answered there (or Ray refused us)."""


class ServerGoneError(NemoGymError):
    """Consecutive rollouts could not connect to one server: it is gone, so dispatching stopped."""

    def __init__(self, message: str, *, server: str):
        self.server = server
        super().__init__(message)


class OutputWriteError(NemoGymError):
    """Writing an output file failed at the OS level (disk full, read-only file system, permissions)."""

    def __init__(self, message: str, *, path: str):
        self.path = path
        super().__init__(message)


class RequirementsInstallError(NemoGymError):
    """pip, run because `+install_requirements=true` asked for it, did not install a folder's requirements."""


class SandboxError(NemoGymError):
    """Model-written code could not be executed in the sandbox."""


class SandboxProviderUnavailableError(SandboxError, ValueError):
    """A container-sandbox provider name that nothing here provides (a ValueError, as NeMo Gym's unknown
    provider is, so an environment's own handling of it still applies)."""


class SandboxCreateError(SandboxError, RuntimeError):
    """A container-sandbox provider could not create a sandbox (a RuntimeError, as NeMo Gym's is)."""


class ComputeError(NemoGymError):
    """CPU-heavy work handed to `nemo_gym.compute` could not be run (its backend is unusable)."""


class ComputeTimeoutError(ComputeError):
    """One job ran past its deadline; the process running it was killed (the same locally and on Ray)."""


class ComputeWorkerDiedError(ComputeError):
    """The process running a job died (a crash in C code, an OOM kill, a lost Ray node), and so did its one retry."""


class ConfinedCallError(ComputeError):
    """A confined scoring function raised (MemoryError included); the text is `Type: message`."""


def exit_code_for(error: BaseException) -> int:
    """The process exit code a CLI should use for `error`."""
    return error.exit_code if isinstance(error, NemoGymError) else 1
