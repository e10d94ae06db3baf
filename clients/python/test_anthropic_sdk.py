"""The official `anthropic` Python SDK against the gateway's `POST /v1/messages`.

Written against the behaviour of Anthropic's own Messages API: response and stream shapes, stop
reasons, usage, and errors as `{"type": "error", "error": {"type", "message"}}` with the
statuses the SDK maps to its exception classes. Claude models go to the (mock) Anthropic
upstream natively; `gpt-4o-mini` and `gemini-2.5-flash` are translated by the gateway.
"""

from __future__ import annotations

import json
from typing import Iterator

import anthropic
import httpx
import pytest

from conftest import MASTER, PROVIDER_KEYS, Mock

MODELS = {
    "claude-haiku-4-5": ("anthropic", "/v1/messages"),
    "gpt-4o-mini": ("openai", "/v1/chat/completions"),
    "gemini-2.5-flash": ("gemini", "/v1beta/models/gemini-2.5-flash:"),
}
ALL_MODELS = list(MODELS)
USER = [{"role": "user", "content": "What is the weather like in Paris?"}]
WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Current weather for a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}
PARIS = '{"city":"Paris"}'


@pytest.fixture
def client(gw: str) -> Iterator[anthropic.Anthropic]:
    c = anthropic.Anthropic(base_url=gw, api_key=MASTER, max_retries=0, timeout=20.0)
    yield c
    c.close()


def text_of(message) -> str:
    return "".join(b.text for b in message.content if b.type == "text")


def upstream_auth_ok(mock: Mock) -> None:
    """The caller's master key (sent as `x-api-key`) never travels upstream."""
    for req in mock.requests():
        dump = json.dumps(req)
        assert MASTER not in dump, f"master key sent upstream to {req['path']}"
        if req["path"].startswith("/v1beta/"):
            own = PROVIDER_KEYS["GEMINI_API_KEY"]
        elif req["path"].endswith("/messages"):
            own = PROVIDER_KEYS["ANTHROPIC_API_KEY"]
        else:
            own = PROVIDER_KEYS["OPENAI_API_KEY"]
        assert own in dump, f"{req['path']} did not get its provider key"


# ------------------------------------------------------------------------------------------------
# messages.create
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ALL_MODELS)
def test_create_non_stream(client: anthropic.Anthropic, mock: Mock, model: str) -> None:
    mock.script({"text": "Sunny, 21 degrees."})
    raw = client.messages.with_raw_response.create(model=model, max_tokens=256, messages=USER)
    message = raw.parse()

    assert message.type == "message"
    assert message.role == "assistant"
    assert message.id
    assert message.model == model
    assert [b.type for b in message.content] == ["text"]
    assert message.content[0].text == "Sunny, 21 degrees."
    assert message.stop_reason == "end_turn"
    assert message.usage.input_tokens > 0
    assert message.usage.output_tokens > 0

    provider, path = MODELS[model]
    assert raw.headers.get("content-type", "").startswith("application/json")
    assert raw.headers.get("x-kairos-request-id")
    assert raw.headers.get("x-kairos-model") == model
    assert raw.headers.get("x-kairos-provider") == provider
    assert float(raw.headers["x-kairos-cost-usd"]) > 0

    requests = mock.requests()
    assert len(requests) == 1 and requests[0]["path"].startswith(path)
    ledger = mock.ledger()
    assert ledger[0]["request_id"] == raw.headers["x-kairos-request-id"]
    billed_input = ledger[0]["prompt_tokens"] - ledger[0]["cached_tokens"]
    assert (billed_input, ledger[0]["completion_tokens"]) == (message.usage.input_tokens, message.usage.output_tokens)
    upstream_auth_ok(mock)


def test_claude_request_is_passed_through(client: anthropic.Anthropic, mock: Mock) -> None:
    """Native path: what the caller wrote reaches Anthropic as written (model, params, blocks)."""
    client.messages.create(
        model="claude-haiku-4-5",
        max_tokens=300,
        stop_sequences=["END"],
        metadata={"user_id": "user-42"},
        system=[{"type": "text", "text": "Be terse."}],
        messages=[{"role": "user", "content": [{"type": "text", "text": "Hello"}]}],
    )
    sent = mock.last_request_body()
    assert sent["model"] == "claude-haiku-4-5"
    assert sent["max_tokens"] == 300
    assert sent["stop_sequences"] == ["END"]
    assert sent["system"] == [{"type": "text", "text": "Be terse."}]
    assert sent["messages"] == [{"role": "user", "content": [{"type": "text", "text": "Hello"}]}]
    req = mock.requests()[-1]
    headers = {k.lower(): v for k, v in req["headers"]}
    assert headers.get("anthropic-version")
    assert headers.get("x-api-key") == PROVIDER_KEYS["ANTHROPIC_API_KEY"]


@pytest.mark.parametrize("model", ALL_MODELS)
def test_system_prompt(client: anthropic.Anthropic, mock: Mock, model: str) -> None:
    message = client.messages.create(model=model, max_tokens=256, system="Answer in French.", messages=USER)
    assert message.stop_reason == "end_turn"
    sent = mock.last_request_body()
    if model.startswith("claude"):
        assert "Answer in French." in json.dumps(sent["system"])
    elif model.startswith("gpt"):
        assert sent["messages"][0]["role"] in ("system", "developer")
        assert "Answer in French." in json.dumps(sent["messages"][0]["content"])
        assert sent["messages"][1]["role"] == "user"
    else:
        assert "Answer in French." in json.dumps(sent["systemInstruction"])
        assert all(c.get("role") != "system" for c in sent["contents"])


@pytest.mark.parametrize("model", ALL_MODELS)
def test_max_tokens_stop_reason(client: anthropic.Anthropic, mock: Mock, model: str) -> None:
    message = client.messages.create(model=model, max_tokens=3, messages=USER)
    assert message.stop_reason == "max_tokens"
    assert 0 < message.usage.output_tokens <= 3
    sent = mock.last_request_body()
    if model.startswith("claude"):
        assert sent["max_tokens"] == 3
    elif model.startswith("gpt"):
        assert sent.get("max_tokens", sent.get("max_completion_tokens")) == 3
    else:
        assert sent["generationConfig"]["maxOutputTokens"] == 3


# ------------------------------------------------------------------------------------------------
# Streaming
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ALL_MODELS)
def test_messages_stream_final_message(client: anthropic.Anthropic, mock: Mock, model: str) -> None:
    text = "The quick brown fox jumps over the lazy dog."
    mock.script({"text": text, "chunks": 5})
    pieces = []
    with client.messages.stream(model=model, max_tokens=256, messages=USER) as stream:
        assert stream.response.headers.get("content-type", "").startswith("text/event-stream")
        assert stream.response.headers.get("x-kairos-model") == model
        for piece in stream.text_stream:
            pieces.append(piece)
        final = stream.get_final_message()
    assert "".join(pieces) == text
    assert len(pieces) > 1, "not streamed"
    assert text_of(final) == text
    assert final.stop_reason == "end_turn"
    assert final.usage.input_tokens > 0
    assert final.usage.output_tokens > 0
    assert final.model == model
    billed = mock.ledger()
    assert len(billed) == 1 and billed[0]["completed"] and billed[0]["stream"]
    assert billed[0]["completion_tokens"] == final.usage.output_tokens


@pytest.mark.parametrize("model", ALL_MODELS)
def test_stream_event_sequence(client: anthropic.Anthropic, mock: Mock, model: str) -> None:
    """The event grammar of the Messages API: message_start, then per block
    content_block_start / *_delta / content_block_stop, then message_delta, message_stop."""
    mock.script({"text": "One two three four five.", "chunks": 3})
    events = list(client.messages.create(model=model, max_tokens=256, messages=USER, stream=True))
    kinds = [e.type for e in events]
    assert kinds[0] == "message_start"
    assert kinds[-2:] == ["message_delta", "message_stop"]
    assert kinds.count("message_delta") == 1
    body = kinds[1:-2]
    assert body[0] == "content_block_start" and body[-1] == "content_block_stop"
    assert set(body[1:-1]) == {"content_block_delta"}
    start = events[0].message
    assert start.role == "assistant" and start.content == [] and start.model == model
    assert events[-2].delta.stop_reason == "end_turn"
    assert events[-2].usage.output_tokens > 0
    # Anthropic reports the input tokens in message_start. A translated stream learns them only
    # at the end (OpenAI's usage chunk): then message_start says 0 and message_delta carries
    # them (its usage is cumulative, the SDK takes it). Either way the count is the billed one.
    billed_input = mock.ledger()[0]["prompt_tokens"]
    assert start.usage.input_tokens in (0, billed_input)
    final_input = events[-2].usage.input_tokens or start.usage.input_tokens
    assert final_input == billed_input > 0
    if model.startswith("claude"):
        assert start.usage.input_tokens == billed_input, "native stream lost message_start usage"
    assert all(e.index == 0 for e in events if e.type.startswith("content_block"))
    assert "".join(e.delta.text for e in events if e.type == "content_block_delta") == "One two three four five."


@pytest.mark.parametrize("model", ALL_MODELS)
def test_cut_stream_raises(client: anthropic.Anthropic, mock: Mock, model: str) -> None:
    mock.script({"chunks": 6, "stream_fault": {"cut_after": 2}})
    received = []
    with pytest.raises(anthropic.APIError) as info:
        with client.messages.stream(model=model, max_tokens=256, messages=USER) as stream:
            for piece in stream.text_stream:
                received.append(piece)
    assert received, "the text sent before the cut was not delivered"
    err = info.value
    assert isinstance(err, anthropic.APIStatusError), f"expected an in-stream `error` event, got {err!r}"
    assert isinstance(err.body, dict) and err.body.get("type") == "error", err.body
    assert err.type, f"the error event has no error.type: {err.body}"


@pytest.mark.parametrize("fault", ["abort_after", "malformed_after", "error_event_after"])
def test_other_stream_faults_raise(client: anthropic.Anthropic, mock: Mock, fault: str) -> None:
    mock.script({"chunks": 6, "stream_fault": {fault: 2}})
    events = []
    with pytest.raises(anthropic.APIError):
        for event in client.messages.create(model="claude-haiku-4-5", max_tokens=256, messages=USER, stream=True):
            events.append(event)
    assert all(e.type != "message_stop" for e in events)


# ------------------------------------------------------------------------------------------------
# Tools
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ALL_MODELS)
def test_tool_use_non_stream(client: anthropic.Anthropic, mock: Mock, model: str) -> None:
    mock.script({"tool_call": {"name": "get_weather", "arguments": PARIS}})
    message = client.messages.create(
        model=model,
        max_tokens=256,
        messages=USER,
        tools=[WEATHER_TOOL],
        tool_choice={"type": "tool", "name": "get_weather"},
    )
    assert message.stop_reason == "tool_use"
    uses = [b for b in message.content if b.type == "tool_use"]
    assert len(uses) == 1
    assert uses[0].id and uses[0].name == "get_weather"
    assert uses[0].input == {"city": "Paris"}

    sent = mock.last_request_body()
    if model.startswith("claude"):
        assert sent["tools"] == [WEATHER_TOOL]
        assert sent["tool_choice"] == {"type": "tool", "name": "get_weather"}
    elif model.startswith("gpt"):
        assert sent["tools"][0]["type"] == "function"
        assert sent["tools"][0]["function"]["name"] == "get_weather"
        assert sent["tools"][0]["function"]["parameters"]["required"] == ["city"]
        assert sent["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    else:
        assert sent["tools"][0]["functionDeclarations"][0]["name"] == "get_weather"
        cfg = sent["toolConfig"]["functionCallingConfig"]
        assert cfg["mode"] == "ANY" and cfg["allowedFunctionNames"] == ["get_weather"]


@pytest.mark.parametrize("model", ALL_MODELS)
def test_tool_use_stream(client: anthropic.Anthropic, mock: Mock, model: str) -> None:
    mock.script({"tool_call": {"name": "get_weather", "arguments": '{"city":"Paris","unit":"celsius"}'}, "chunks": 5})
    partial_json = []
    with client.messages.stream(
        model=model, max_tokens=256, messages=USER, tools=[WEATHER_TOOL], tool_choice={"type": "any"}
    ) as stream:
        for event in stream:
            if event.type == "content_block_delta" and event.delta.type == "input_json_delta":
                partial_json.append(event.delta.partial_json)
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    uses = [b for b in final.content if b.type == "tool_use"]
    assert len(uses) == 1 and uses[0].name == "get_weather" and uses[0].id
    assert uses[0].input == {"city": "Paris", "unit": "celsius"}
    assert json.loads("".join(partial_json)) == {"city": "Paris", "unit": "celsius"}
    assert final.usage.output_tokens > 0


@pytest.mark.parametrize("model", ALL_MODELS)
def test_tool_result_round_trip(client: anthropic.Anthropic, mock: Mock, model: str) -> None:
    messages = [
        *USER,
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Let me check."},
                {"type": "tool_use", "id": "toolu_01abc", "name": "get_weather", "input": {"city": "Paris"}},
            ],
        },
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "toolu_01abc", "content": '{"temp_c": 21}'}],
        },
    ]
    mock.script({"text": "It is 21 degrees in Paris."})
    message = client.messages.create(model=model, max_tokens=256, messages=messages, tools=[WEATHER_TOOL])
    assert text_of(message) == "It is 21 degrees in Paris."
    assert message.stop_reason == "end_turn"
    sent = mock.last_request_body()
    if model.startswith("claude"):
        assert sent["messages"] == messages
    elif model.startswith("gpt"):
        calls = [m for m in sent["messages"] if m.get("tool_calls")]
        results = [m for m in sent["messages"] if m["role"] == "tool"]
        assert len(calls) == 1 and len(results) == 1
        assert calls[0]["tool_calls"][0]["id"] == results[0]["tool_call_id"]
        assert json.loads(calls[0]["tool_calls"][0]["function"]["arguments"]) == {"city": "Paris"}
        assert "temp_c" in json.dumps(results[0]["content"])
    else:
        parts = [p for c in sent["contents"] for p in c["parts"]]
        call = next(p["functionCall"] for p in parts if "functionCall" in p)
        response = next(p["functionResponse"] for p in parts if "functionResponse" in p)
        assert call["name"] == response["name"] == "get_weather"
        assert call["args"] == {"city": "Paris"}
        assert "temp_c" in json.dumps(response)


# ------------------------------------------------------------------------------------------------
# Errors, in Anthropic's shape
# ------------------------------------------------------------------------------------------------


def assert_anthropic_error(err: anthropic.APIStatusError, error_type: str) -> None:
    assert isinstance(err.body, dict), err.body
    assert err.body.get("type") == "error", err.body
    assert err.body["error"]["type"] == error_type, err.body
    assert isinstance(err.body["error"]["message"], str) and err.body["error"]["message"]
    assert err.type == error_type


def test_wrong_key_is_an_authentication_error(gw: str, mock: Mock) -> None:
    bad = anthropic.Anthropic(base_url=gw, api_key="kr-not-the-master-key-0000", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as info:
        bad.messages.create(model="claude-haiku-4-5", max_tokens=16, messages=USER)
    assert info.value.status_code == 401
    assert_anthropic_error(info.value, "authentication_error")
    assert mock.requests() == []


def test_bearer_auth_token_is_accepted(gw: str, mock: Mock) -> None:
    """`auth_token` (ANTHROPIC_AUTH_TOKEN, as gateway users set it) sends `Authorization: Bearer`."""
    c = anthropic.Anthropic(base_url=gw, auth_token=MASTER, max_retries=0, timeout=20.0)
    message = c.messages.create(model="claude-haiku-4-5", max_tokens=64, messages=USER)
    assert message.stop_reason == "end_turn"
    upstream_auth_ok(mock)


def test_unknown_model_is_not_found(client: anthropic.Anthropic, mock: Mock) -> None:
    with pytest.raises(anthropic.NotFoundError) as info:
        client.messages.create(model="claude-nonexistent-9", max_tokens=16, messages=USER)
    assert info.value.status_code == 404
    assert_anthropic_error(info.value, "not_found_error")
    assert mock.requests() == []


def test_missing_max_tokens_is_a_bad_request(http: httpx.Client, mock: Mock) -> None:
    # The SDK will not send this request; the API answers 400 invalid_request_error.
    r = http.post(
        "/v1/messages",
        headers={"x-api-key": MASTER, "anthropic-version": "2023-06-01", "content-type": "application/json"},
        json={"model": "claude-haiku-4-5", "messages": USER},
    )
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["type"] == "error"
    assert body["error"]["type"] == "invalid_request_error"
    assert "max_tokens" in body["error"]["message"]
    assert mock.requests() == []


@pytest.mark.parametrize(
    ("desc", "kwargs"),
    [
        ("empty messages", {"messages": []}),
        ("negative max_tokens", {"max_tokens": -1}),
        ("unknown role", {"messages": [{"role": "wizard", "content": "hi"}]}),
        ("forbidden routing field", {"extra_body": {"base_url": "http://169.254.169.254/"}}),
    ],
)
def test_bad_input_is_a_bad_request(client: anthropic.Anthropic, mock: Mock, desc: str, kwargs: dict) -> None:
    args = {"model": "claude-haiku-4-5", "max_tokens": 64, "messages": USER, **kwargs}
    with pytest.raises(anthropic.BadRequestError) as info:
        client.messages.create(**args)
    assert_anthropic_error(info.value, "invalid_request_error")
    assert mock.requests() == [], f"{desc}: the upstream was called"


@pytest.mark.parametrize("model", ALL_MODELS)
def test_upstream_rate_limit_is_a_rate_limit_error(client: anthropic.Anthropic, mock: Mock, model: str) -> None:
    mock.script({"status": 429, "retry_after": "7"})
    with pytest.raises(anthropic.RateLimitError) as info:
        client.messages.create(model=model, max_tokens=64, messages=USER)
    assert info.value.status_code == 429
    assert_anthropic_error(info.value, "rate_limit_error")
    assert info.value.response.headers.get("retry-after") == "7"
    assert len(mock.requests()) == 1


def test_upstream_overload_is_a_server_error_of_type_overloaded(client: anthropic.Anthropic, mock: Mock) -> None:
    mock.script({"status": 529})
    with pytest.raises(anthropic.InternalServerError) as info:
        client.messages.create(model="claude-haiku-4-5", max_tokens=64, messages=USER)
    assert info.value.status_code in (503, 529)
    assert_anthropic_error(info.value, "overloaded_error")


def test_upstream_server_error_is_an_api_error(client: anthropic.Anthropic, mock: Mock) -> None:
    mock.script({"status": 500, "error_message": f"boom {PROVIDER_KEYS['ANTHROPIC_API_KEY']}"})
    with pytest.raises(anthropic.InternalServerError) as info:
        client.messages.create(model="claude-haiku-4-5", max_tokens=64, messages=USER)
    assert info.value.status_code >= 500
    assert_anthropic_error(info.value, "api_error")
    assert PROVIDER_KEYS["ANTHROPIC_API_KEY"] not in info.value.response.text, "provider key leaked"


def test_stream_error_before_the_first_event_is_an_http_error(client: anthropic.Anthropic, mock: Mock) -> None:
    mock.script({"status": 429, "retry_after": "2"})
    with pytest.raises(anthropic.RateLimitError) as info:
        with client.messages.stream(model="claude-haiku-4-5", max_tokens=64, messages=USER) as stream:
            stream.until_done()
    assert info.value.response.headers.get("retry-after") == "2"
