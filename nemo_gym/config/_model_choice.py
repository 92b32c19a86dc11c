"""`+model=<provider>[/<name>][@<base_url>]`: choose the policy model server on the command line.

    +model=local                              the embedded local_model (no key, no network)
    +model=local/<file.gguf>                  the same server on other GGUF weights
    +model=openai/gpt-4.1-mini                openai_model on https://api.openai.com/v1
    +model=vllm/Qwen/Qwen3-8B@http://host:8000/v1
    +model=azure/<deployment>                 azure_openai_model

The provider's own config file (`responses_api_models/<impl>/configs/<impl>.yaml`, which defines
`policy_model`) joins the config files, and a layer right above it fills in the model name, the
address and where the key comes from; env.yaml and the command line still override any field.
A config that already defines `policy_model` would be a second choice of policy: that is an error
naming both, never a silent winner.

The address: the one after `@`; else openai's public API; else (azure, vllm) `policy_base_url`
from env.yaml or the command line; else (azure) the AZURE_OPENAI_ENDPOINT environment variable.
The key: `+policy_api_key=` typed on the command line; else env.yaml's `policy_api_key` when the
address is env.yaml's `policy_base_url` (a key goes only to the endpoint it was written down for);
else the provider's environment variable (OPENAI_API_KEY, AZURE_OPENAI_API_KEY, VLLM_API_KEY).
openai and azure need one; vLLM serves without a key unless it was started with --api-key.
"""

from __future__ import annotations

import difflib
import os
import pathlib
from dataclasses import dataclass

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from nemo_gym.errors import ModelChoiceError

MODEL_KEY = "model"
POLICY_MODEL = "policy_model"
MODEL_TYPE = "responses_api_models"
OPENAI_URL = "https://api.openai.com/v1"
FORMS = "local, openai/<model>, vllm/<model>@<base_url>, azure/<deployment>"


@dataclass(frozen=True)
class Provider:
    """One `+model=` prefix: the model server it starts and where that server's settings come from."""

    implementation: str
    name_field: str
    url_field: str
    key_field: str
    key_variable: str
    key_required: bool
    public_url: str | None = None
    """Where the provider always is (OpenAI); None = the user's own server (policy_base_url)."""
    url_variable: str | None = None


PROVIDERS: dict[str, Provider] = {
    "openai": Provider(
        "openai_model", "openai_model", "openai_base_url", "openai_api_key", "OPENAI_API_KEY", True, OPENAI_URL
    ),
    "vllm": Provider("vllm_model", "model", "base_url", "api_key", "VLLM_API_KEY", False),
    "azure": Provider(
        "azure_openai_model",
        "openai_model",
        "openai_base_url",
        "openai_api_key",
        "AZURE_OPENAI_API_KEY",
        True,
        url_variable="AZURE_OPENAI_ENDPOINT",
    ),
}
LOCAL = "local"
LOCAL_IMPLEMENTATION = "local_model"
KNOWN = (LOCAL, *PROVIDERS)


@dataclass(frozen=True)
class ModelChoice:
    """What `+model=` adds to the config: the provider's config file and the layer that fills it in."""

    config_file: pathlib.Path
    layer: DictConfig


def choose_model(
    cli: DictConfig,
    env: DictConfig,
    env_path: pathlib.Path | None,
    files: list[tuple[pathlib.Path, DictConfig]],
    root: pathlib.Path,
    environ: dict[str, str] | None = None,
) -> ModelChoice | None:
    """The model server `+model=` asks for, or None without one. ModelChoiceError (exit 2) for a value
    that names no known provider, lacks its address or key, or meets a `policy_model` already configured."""
    if MODEL_KEY not in cli:
        return None
    value = cli[MODEL_KEY]
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ModelChoiceError(f"+model must be one of {FORMS}; got {value!r}")
    value = value.strip()
    environ = dict(os.environ) if environ is None else environ
    provider_name, _, rest = value.partition("/")
    implementation = _implementation(provider_name, value)
    _refuse_a_second_policy(value, implementation, cli, env, env_path, files, root)
    config_file = root / MODEL_TYPE / implementation / "configs" / f"{implementation}.yaml"
    if not config_file.is_file():
        raise ModelChoiceError(f"+model={value} needs {config_file}, which does not exist")
    if provider_name == LOCAL:
        fields = _local_fields(rest, value)
    else:
        fields = _remote_fields(PROVIDERS[provider_name], provider_name, rest, value, cli, env, environ)
    layer = OmegaConf.create({POLICY_MODEL: {MODEL_TYPE: {implementation: fields}}})
    return ModelChoice(config_file=config_file, layer=layer)


def _implementation(provider_name: str, value: str) -> str:
    if provider_name == LOCAL:
        return LOCAL_IMPLEMENTATION
    if provider_name in PROVIDERS:
        return PROVIDERS[provider_name].implementation
    close = difflib.get_close_matches(provider_name, KNOWN, n=1)
    if close:
        hint = f"did you mean '{close[0]}'? "
    elif "/" not in value:  # a bare model name: say how to name its provider
        hint = f"name its provider, e.g. +model=openai/{value}; "
    else:
        hint = ""
    raise ModelChoiceError(
        f"+model={value}: unknown model provider {provider_name!r}; {hint}known providers: {', '.join(KNOWN)} "
        f"(forms: {FORMS})"
    )


def _refuse_a_second_policy(
    value: str,
    implementation: str,
    cli: DictConfig,
    env: DictConfig,
    env_path: pathlib.Path | None,
    files: list[tuple[pathlib.Path, DictConfig]],
    root: pathlib.Path,
) -> None:
    """A config file defining `policy_model` is a second choice; env.yaml or the command line may only
    tune fields of the server +model picks (`+policy_model.responses_api_models.local_model.n_parallel=1`)."""
    where = [_shown(path, root) for path, cfg in files if POLICY_MODEL in cfg]
    for name, layer in ((str(env_path), env), ("the command line", cli)):
        if POLICY_MODEL in layer and not _only_tunes(layer, implementation):
            where.append(name)
    if where:
        raise ModelChoiceError(
            f"+model={value} and `{POLICY_MODEL}` defined in {where[0]} both choose the policy model; "
            f"drop +model, or remove {POLICY_MODEL} from {where[0]}"
        )


def _only_tunes(layer: DictConfig, implementation: str) -> bool:
    try:
        node = OmegaConf.to_container(layer[POLICY_MODEL], resolve=False)
    except OmegaConfBaseException:
        return False
    return isinstance(node, dict) and set(node) == {MODEL_TYPE} and set(node[MODEL_TYPE] or {}) == {implementation}


def _shown(path: pathlib.Path, root: pathlib.Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def _local_fields(rest: str, value: str) -> dict[str, object]:
    if not rest:
        return {}
    weights = pathlib.Path(rest).expanduser()
    if not weights.is_file():
        raise ModelChoiceError(f"+model={value}: local model weights not found: {weights} (give a .gguf file)")
    return {"model_path": str(weights.resolve())}


def _remote_fields(
    provider: Provider,
    provider_name: str,
    rest: str,
    value: str,
    cli: DictConfig,
    env: DictConfig,
    environ: dict[str, str],
) -> dict[str, object]:
    name, at, explicit_url = rest.rpartition("@") if "@" in rest else (rest, "", "")
    if at and not explicit_url.startswith(("http://", "https://")):
        name, explicit_url = rest, ""  # an '@' inside the model's name, not an address
    if not name:
        raise ModelChoiceError(
            f"+model={value}: name the model after '{provider_name}/', e.g. +model={_example(provider_name)}"
        )
    policy_url = _text(cli, "policy_base_url") or _text(env, "policy_base_url")
    url = explicit_url or provider.public_url or policy_url or (environ.get(provider.url_variable or "") or None)
    if not url:
        sources = "policy_base_url in env.yaml (or +policy_base_url=...)"
        if provider.url_variable:
            sources += f", or the {provider.url_variable} environment variable"
        raise ModelChoiceError(
            f"+model={value} needs the server's address: add @<base_url> (+model={_example(provider_name)}), or set {sources}"
        )
    fields: dict[str, object] = {provider.name_field: name, provider.url_field: url}

    env_url = _text(env, "policy_base_url")
    if "policy_api_key" in cli:
        fields[provider.key_field] = "${policy_api_key}"
    elif "policy_api_key" in env and env_url is not None and _same_url(url, env_url):
        fields[provider.key_field] = "${policy_api_key}"
    elif environ.get(provider.key_variable):
        fields[provider.key_field] = f"${{oc.env:{provider.key_variable}}}"
    elif provider.key_required:
        from_env_yaml = f"policy_api_key in env.yaml together with policy_base_url: {url}"
        raise ModelChoiceError(
            f"+model={value} needs an API key for {url}: set the {provider.key_variable} environment variable, "
            f"or {from_env_yaml}, or pass +policy_api_key=..."
        )
    else:
        fields[provider.key_field] = ""
    return fields


def _example(provider_name: str) -> str:
    return {
        "openai": "openai/gpt-4.1-mini",
        "vllm": "vllm/Qwen/Qwen3-8B@http://host:8000/v1",
        "azure": "azure/<deployment>@https://<resource>.openai.azure.com",
    }[provider_name]


def _text(layer: DictConfig, key: str) -> str | None:
    try:
        value = OmegaConf.select(layer, key, default=None)
    except OmegaConfBaseException:
        return None
    return str(value) if value not in (None, "") else None


def _same_url(a: str, b: str) -> bool:
    return a.rstrip("/") == b.rstrip("/")
