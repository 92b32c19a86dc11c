"""NeMo Gym's `nemo_gym.responses_converter` import path: Responses <-> Chat Completions as typed objects.

    converter = ResponsesConverter(return_token_id_information=False)
    chat_params = converter.responses_to_chat_completion_create_params(responses_params)
    response = converter.chat_completion_to_response(responses_params, chat_completion)

The conversion itself is ours (`nemo_gym.conversion`, dict in, dict out, used by our model servers);
this class gives it NeMo Gym's method names and typed arguments. Two behaviours follow NeMo Gym's
converter where ours differs: `instructions` and the run of system/developer messages that opens the
input become one leading system message (chat backends often accept only one, at position 0), and
`<think>` parsing of assistant text can be switched off with `uses_reasoning_parser=False`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, TypeAdapter

from nemo_gym import conversion
from nemo_gym.response_items import (
    FunctionCallOutput,
    InputMessage,
    Item,
    TypedChatCompletionCreateParams,
    TypedResponse,
    TypedResponseCreateParams,
)

__all__ = [
    "ResponsesConverter",
    "VLLMConverter",
    "split_responses_input_output_items",
]

JSONDict = dict[str, Any]

_ITEM: TypeAdapter[Item] = TypeAdapter(Item)


def _as_dict(value: BaseModel | JSONDict) -> JSONDict:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", exclude_unset=True)
    return dict(value)


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content or [] if isinstance(part, dict))


class ResponsesConverter(BaseModel):
    """Converts requests and replies between the Responses API and Chat Completions."""

    return_token_id_information: bool
    uses_reasoning_parser: bool = True

    @staticmethod
    def _wrap_reasoning_in_think_tags(texts: list[str]) -> str:
        return "".join(f"<think>{text}</think>" for text in texts if text)

    # ---- Responses request -> Chat request --------------------------------------------------------
    def responses_to_chat_completion_create_params(
        self, responses_create_params: TypedResponseCreateParams | JSONDict
    ) -> TypedChatCompletionCreateParams:
        params = _as_dict(responses_create_params)
        instructions = params.pop("instructions", None)
        chat = conversion.responses_to_chat_params(params, include_token_ids=self.return_token_id_information)
        messages = chat["messages"]
        if instructions:
            leading = [instructions]
            while messages and messages[0]["role"] in ("system", "developer"):
                leading.append(_text_of(messages.pop(0)["content"]))
            messages.insert(0, {"role": "system", "content": "\n\n".join(leading)})
        if not chat.get("tools") and params.get("tool_choice") == "required":
            raise ValueError("tool_choice='required' requires at least one tool")
        return TypedChatCompletionCreateParams.model_validate(chat)

    # ---- Chat reply -> Responses items ------------------------------------------------------------
    def postprocess_assistant_message_dict(self, message_dict: JSONDict) -> list[Item]:
        message = dict(message_dict)
        output = conversion.assistant_message_to_output(message, parse_think=self.uses_reasoning_parser)
        if self.return_token_id_information:
            bundle = {key: message[key] for key in conversion.TOKEN_ID_KEYS if message.get(key) is not None}
            output[-1].update(bundle)
        return [_ITEM.validate_python(item) for item in output]

    def postprocess_chat_response(self, choice: Any) -> list[Item]:
        message = choice["message"] if isinstance(choice, dict) else choice.message
        return self.postprocess_assistant_message_dict(_as_dict(message))

    def chat_completions_messages_to_responses_items(self, messages: Iterable[JSONDict]) -> list[Item]:
        items: list[Item] = []
        for message in messages:
            role = message["role"]
            if role in ("user", "system", "developer"):
                items.append(InputMessage.model_validate({**message, "content": message.get("content") or ""}))
            elif role == "assistant":
                items.extend(self.postprocess_assistant_message_dict(message))
            elif role == "tool":
                content = message["content"]
                if isinstance(content, list):
                    content = [{"type": "input_text", "text": part["text"]} for part in content]
                items.append(
                    FunctionCallOutput.model_validate(
                        {"call_id": message["tool_call_id"], "output": content, "status": "completed"}
                    )
                )
            else:
                raise NotImplementedError(f"Unrecognized role: {role}!")
        return items

    def chat_completion_to_response(
        self,
        responses_create_params: TypedResponseCreateParams | JSONDict,
        chat_completion: BaseModel | JSONDict,
    ) -> TypedResponse:
        params = _as_dict(responses_create_params)
        completion = _as_dict(chat_completion)
        response = conversion.chat_completion_to_response(
            completion,
            request_params=params,
            model=params.get("model") or completion.get("model") or "",
            include_token_ids=self.return_token_id_information,
        )
        choice = completion["choices"][0]
        response["output"] = [item.model_dump(mode="json") for item in self.postprocess_chat_response(choice)]
        if completion.get("created") is not None:
            response["created_at"] = completion["created"]
        return TypedResponse.model_validate(response)


VLLMConverter = ResponsesConverter
"""NeMo Gym's older name for the converter."""

# Item types the model generates: the first one in a list starts the sampled segment.
_GENERATED_TYPES = frozenset(
    {
        "code_interpreter_call",
        "computer_call",
        "custom_tool_call",
        "file_search_call",
        "function_call",
        "image_generation_call",
        "local_shell_call",
        "mcp_approval_request",
        "mcp_call",
        "mcp_list_tools",
        "reasoning",
        "web_search_call",
    }
)


def split_responses_input_output_items(items: list[Any]) -> tuple[list[Any], list[Any]]:
    """Split a turn's items into the replayed prompt and what the model generated: the cut is at the first
    assistant message or generated item (a tool result or a user message never opens the generated part)."""
    for index, item in enumerate(items):
        item_type = item.get("type") if isinstance(item, dict) else getattr(item, "type", None)
        role = item.get("role") if isinstance(item, dict) else getattr(item, "role", None)
        if (item_type == "message" and role == "assistant") or item_type in _GENERATED_TYPES:
            return list(items[:index]), list(items[index:])
    return list(items), []
