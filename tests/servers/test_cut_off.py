"""`BaseVerifyRequest.cut_off()` reads only what `episode_end` needs, for our dict-based request and
NeMo Gym's typed one alike, and says what `episode_end` says of the whole dumped request."""

import itertools

import pytest

from nemo_gym.base_resources_server import BaseVerifyRequest as TypedVerifyRequest
from nemo_gym.servers.resources import EPISODE_END_FIELD, BaseVerifyRequest, episode_end

OUTPUTS = [
    [],
    [{"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "4", "annotations": []}]}],
    [
        {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c", "output": "x"},
    ],
]
STATUSES = [None, "completed", "incomplete"]
DETAILS = [None, {"reason": "max_output_tokens"}, {"reason": "context_limit"}]
ROW_ENDINGS = [{}, {EPISODE_END_FIELD: "deadline"}]
RESPONSE_ENDINGS = [{}, {EPISODE_END_FIELD: "max_steps"}]


@pytest.mark.parametrize("request_class", [BaseVerifyRequest, TypedVerifyRequest])
def test_cut_off_agrees_with_episode_end_of_the_whole_request(request_class):
    for output, status, details, row_end, response_end in itertools.product(
        OUTPUTS, STATUSES, DETAILS, ROW_ENDINGS, RESPONSE_ENDINGS
    ):
        response = {"id": "r", "output": output, "status": status, "incomplete_details": details, **response_end}
        request = request_class.model_validate(
            {"responses_create_params": {"input": "x"}, "response": response, **row_end}
        )
        whole = episode_end(request.model_dump(include={"response", EPISODE_END_FIELD}))
        assert (request.cut_off() or "completed") == whole, (response, row_end)
