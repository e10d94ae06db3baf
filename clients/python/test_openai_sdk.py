"""The official `openai` Python SDK against the gateway's OpenAI-compatible API.

Each model family is served by the mock upstream in its own wire format (OpenAI chat
completions, Anthropic Messages, Gemini generateContent); the gateway translates. The SDK is
the judge of wire compatibility: if it parses, streams and raises as it does against OpenAI,
the gateway is a drop-in replacement.
"""

from __future__ import annotations

import json
import math
from typing import Iterator

import openai
import pydantic
import pytest

from conftest import MASTER, PROVIDER_KEYS, Mock

# model -> the provider that serves it, and the upstream path the mock must see.
MODELS = {
    "gpt-4o-mini": ("openai", "/v1/chat/completions"),
    "claude-haiku-4-5": ("anthropic", "/v1/messages"),
    "gemini-2.5-flash": ("gemini", "/v1beta/models/gemini-2.5-flash:"),
}
ALL_MODELS = list(MODELS)
USER = [{"role": "user", "content": "What is the weather like in Paris?"}]
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
PARIS = '{"city":"Paris"}'


@pytest.fixture
def client(gw: str) -> Iterator[openai.OpenAI]:
    c = openai.OpenAI(base_url=gw + "/v1", api_key=MASTER, max_retries=0, timeout=20.0)
    yield c
    c.close()


def extra(obj, name: str):
    """A field the OpenAI types do not declare (a KairosRoute extension such as `usage.cost`)."""
    return (obj.model_extra or {}).get(name, getattr(obj, name, None))


def upstream_auth_ok(mock: Mock) -> None:
    """The caller's master key never travels upstream; each provider gets its own key."""
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


def expected_cost_usd(client: openai.OpenAI, model: str, prompt: int, completion: int) -> float:
    """Cost from the prices the gateway itself publishes on /v1/models/{id}."""
    pricing = extra(client.models.retrieve(model), "pricing")
    micros = prompt * pricing["input_usd_per_mtok"] + completion * pricing["output_usd_per_mtok"]
    return micros / 1e6


# ------------------------------------------------------------------------------------------------
# Chat completions, non-streaming
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ALL_MODELS)
def test_chat_non_stream_content_usage_and_headers(client: openai.OpenAI, mock: Mock, model: str) -> None:
    mock.script({"text": "Sunny, 21 degrees."})
    raw = client.chat.completions.with_raw_response.create(model=model, messages=USER)
    completion = raw.parse()

    assert completion.object == "chat.completion"
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].message.content == "Sunny, 21 degrees."
    assert completion.choices[0].finish_reason == "stop"
    u = completion.usage
    assert u.prompt_tokens > 0 and u.completion_tokens > 0
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens

    provider, path = MODELS[model]
    request_id = raw.headers.get("x-kairos-request-id")
    assert request_id
    assert raw.headers.get("x-kairos-model") == model
    assert raw.headers.get("x-kairos-provider") == provider
    cost = float(raw.headers["x-kairos-cost-usd"])
    assert cost > 0
    assert math.isclose(extra(u, "cost"), cost, abs_tol=1e-9), "usage.cost disagrees with the header"
    want = expected_cost_usd(client, model, u.prompt_tokens, u.completion_tokens)
    assert math.isclose(cost, want, abs_tol=1.01e-6), f"cost {cost} != prices x usage {want}"

    # The provider's own invoice: one call, keyed by our request id, same token counts.
    ledger = mock.ledger()
    assert len(ledger) == 1
    assert ledger[0]["request_id"] == request_id
    assert ledger[0]["route"].startswith(path)
    assert (ledger[0]["prompt_tokens"], ledger[0]["completion_tokens"]) == (u.prompt_tokens, u.completion_tokens)
    upstream_auth_ok(mock)


@pytest.mark.parametrize("model", ALL_MODELS)
def test_system_prompt_and_max_tokens_reach_the_upstream(client: openai.OpenAI, mock: Mock, model: str) -> None:
    completion = client.chat.completions.create(
        model=model,
        messages=[{"role": "system", "content": "Answer in French."}, *USER],
        max_tokens=3,
    )
    # The mock cuts the reply at the cap and says so, in each provider's vocabulary.
    assert completion.choices[0].finish_reason == "length"
    assert 0 < completion.usage.completion_tokens <= 3
    sent = mock.last_request_body()
    if model.startswith("gpt"):
        assert sent["messages"][0] == {"role": "system", "content": "Answer in French."}
        assert sent.get("max_tokens", sent.get("max_completion_tokens")) == 3
    elif model.startswith("claude"):
        assert "Answer in French." in json.dumps(sent["system"])
        assert all(m["role"] != "system" for m in sent["messages"])
        assert sent["max_tokens"] == 3
    else:
        assert "Answer in French." in json.dumps(sent["systemInstruction"])
        assert sent["generationConfig"]["maxOutputTokens"] == 3


# ------------------------------------------------------------------------------------------------
# Streaming
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ALL_MODELS)
def test_stream_with_include_usage_ends_with_a_usage_chunk_carrying_cost(
    client: openai.OpenAI, mock: Mock, model: str
) -> None:
    text = "The quick brown fox jumps over the lazy dog."
    mock.script({"text": text, "chunks": 5})
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=USER, stream=True, stream_options={"include_usage": True}
    )
    assert raw.headers.get("content-type", "").startswith("text/event-stream")
    assert raw.headers.get("x-kairos-model") == model
    assert raw.headers.get("x-kairos-provider") == MODELS[model][0]
    assert raw.headers.get("x-kairos-request-id")
    header_cost = raw.headers.get("x-kairos-cost-usd")
    assert header_cost is not None  # "pending": a stream learns its cost at the end

    chunks = list(raw.parse())
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert content == text
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) > 1, "not streamed"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]

    # Exactly one usage chunk, the last one, with empty choices (the OpenAI contract).
    usage_chunks = [c for c in chunks if not c.choices]
    assert len(usage_chunks) == 1 and usage_chunks[0] is chunks[-1]
    u = chunks[-1].usage
    assert u is not None and u.prompt_tokens > 0 and u.completion_tokens > 0
    cost = extra(u, "cost")
    assert isinstance(cost, float) and cost > 0, f"usage.cost missing: {u}"
    want = expected_cost_usd(client, model, u.prompt_tokens, u.completion_tokens)
    assert math.isclose(cost, want, abs_tol=1.01e-6)
    if header_cost != "pending":
        assert math.isclose(float(header_cost), cost, abs_tol=1e-9)
    billed = mock.ledger()
    assert len(billed) == 1 and billed[0]["completed"] and billed[0]["stream"]
    assert (billed[0]["prompt_tokens"], billed[0]["completion_tokens"]) == (u.prompt_tokens, u.completion_tokens)


@pytest.mark.parametrize("model", ALL_MODELS)
def test_stream_without_include_usage_has_no_empty_choices_chunk(client: openai.OpenAI, mock: Mock, model: str) -> None:
    stream = client.chat.completions.create(model=model, messages=USER, stream=True)
    chunks = list(stream)
    assert chunks, "empty stream"
    assert all(c.choices for c in chunks), "a usage chunk leaked to a caller who did not ask for it"
    assert all(c.usage is None for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop"


@pytest.mark.parametrize("model", ALL_MODELS)
def test_stream_helper_accumulates_text(client: openai.OpenAI, mock: Mock, model: str) -> None:
    mock.script({"text": "héllo wörld 😀 ✓", "split_utf8": True})
    deltas = []
    with client.chat.completions.stream(model=model, messages=USER) as stream:
        for event in stream:
            if event.type == "content.delta":
                deltas.append(event.delta)
        final = stream.get_final_completion()
    assert "".join(deltas) == "héllo wörld 😀 ✓"
    assert final.choices[0].message.content == "héllo wörld 😀 ✓"
    assert final.choices[0].finish_reason == "stop"


# A stream that breaks must raise in the SDK's iteration, never end quietly as if complete.
STREAM_FAULTS = ["cut_after", "abort_after", "malformed_after", "error_event_after"]


@pytest.mark.parametrize("model", ALL_MODELS)
@pytest.mark.parametrize("fault", STREAM_FAULTS)
def test_broken_stream_raises_during_iteration(client: openai.OpenAI, mock: Mock, model: str, fault: str) -> None:
    mock.script({"chunks": 6, "stream_fault": {fault: 2}})
    stream = client.chat.completions.create(model=model, messages=USER, stream=True)  # headers: 200
    received = []
    with pytest.raises(openai.APIError) as info:
        for chunk in stream:
            received.append(chunk)
    assert not isinstance(info.value, openai.APIStatusError), "the stream had already started"
    content = "".join(c.choices[0].delta.content or "" for c in received if c.choices)
    assert content, "the content sent before the fault was not delivered"
    assert not any(c.choices and c.choices[0].finish_reason for c in received), "a cut stream claimed to finish"
    assert info.value.code, f"the in-stream error has no code: {info.value.body}"
    assert info.value.message


def test_cut_stream_raises_in_the_stream_helper(client: openai.OpenAI, mock: Mock) -> None:
    mock.script({"chunks": 6, "stream_fault": {"cut_after": 2}})
    with pytest.raises(openai.APIError) as info:
        with client.chat.completions.stream(model="gpt-4o-mini", messages=USER) as stream:
            for _ in stream:
                pass
    assert info.value.code == "upstream_cut"


# ------------------------------------------------------------------------------------------------
# Tools
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ALL_MODELS)
def test_tool_call_non_stream(client: openai.OpenAI, mock: Mock, model: str) -> None:
    mock.script({"tool_call": {"name": "get_weather", "arguments": PARIS}})
    completion = client.chat.completions.create(
        model=model,
        messages=USER,
        tools=[WEATHER_TOOL],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.id
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}

    # The tool and the forced choice reached the upstream in its own format.
    sent = mock.last_request_body()
    if model.startswith("gpt"):
        assert sent["tools"][0]["function"]["name"] == "get_weather"
        assert sent["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    elif model.startswith("claude"):
        assert sent["tools"][0]["name"] == "get_weather"
        assert sent["tools"][0]["input_schema"]["required"] == ["city"]
        assert sent["tool_choice"] == {"type": "tool", "name": "get_weather"}
    else:
        assert sent["tools"][0]["functionDeclarations"][0]["name"] == "get_weather"
        cfg = sent["toolConfig"]["functionCallingConfig"]
        assert cfg["mode"] == "ANY" and cfg["allowedFunctionNames"] == ["get_weather"]


@pytest.mark.parametrize("model", ALL_MODELS)
def test_tool_call_stream_reassembled_by_hand(client: openai.OpenAI, mock: Mock, model: str) -> None:
    mock.script({"tool_call": {"name": "get_weather", "arguments": '{"city":"Paris","unit":"celsius"}'}, "chunks": 5})
    stream = client.chat.completions.create(
        model=model, messages=USER, tools=[WEATHER_TOOL], tool_choice="required", stream=True
    )
    calls: dict[int, dict] = {}
    finish = None
    argument_deltas = 0
    for chunk in stream:
        if not chunk.choices:
            continue
        choice = chunk.choices[0]
        for tc in choice.delta.tool_calls or []:
            slot = calls.setdefault(tc.index, {"id": None, "name": "", "arguments": ""})
            if tc.id:
                assert slot["id"] in (None, tc.id), "tool call id changed mid-stream"
                slot["id"] = tc.id
            if tc.function and tc.function.name:
                slot["name"] += tc.function.name
            if tc.function and tc.function.arguments:
                slot["arguments"] += tc.function.arguments
                argument_deltas += 1
        finish = choice.finish_reason or finish
    assert finish == "tool_calls"
    assert list(calls) == [0]
    assert calls[0]["id"] and calls[0]["name"] == "get_weather"
    assert json.loads(calls[0]["arguments"]) == {"city": "Paris", "unit": "celsius"}
    assert argument_deltas >= 1


class GetWeather(pydantic.BaseModel):
    """Current weather for a city"""

    city: str


@pytest.mark.parametrize("model", ALL_MODELS)
def test_tool_call_stream_with_the_sdk_helper_and_parsed_arguments(
    client: openai.OpenAI, mock: Mock, model: str
) -> None:
    mock.script({"tool_call": {"name": "GetWeather", "arguments": PARIS}, "chunks": 4})
    done_events = []
    with client.chat.completions.stream(
        model=model,
        messages=USER,
        tools=[openai.pydantic_function_tool(GetWeather)],
        tool_choice="required",
        stream_options={"include_usage": True},
    ) as stream:
        for event in stream:
            if event.type == "tool_calls.function.arguments.done":
                done_events.append(event)
        final = stream.get_final_completion()
    assert [(e.name, e.arguments) for e in done_events] == [("GetWeather", PARIS)]
    assert done_events[0].parsed_arguments == GetWeather(city="Paris")
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    assert call.function.parsed_arguments == GetWeather(city="Paris")
    assert final.usage is not None and final.usage.completion_tokens > 0


@pytest.mark.parametrize("model", ALL_MODELS)
def test_tool_result_round_trip(client: openai.OpenAI, mock: Mock, model: str) -> None:
    """The second turn of a tool conversation: the assistant's call and the tool's result."""
    messages = [
        *USER,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "call_abc123", "type": "function", "function": {"name": "get_weather", "arguments": PARIS}}
            ],
        },
        {"role": "tool", "tool_call_id": "call_abc123", "content": '{"temp_c": 21}'},
    ]
    mock.script({"text": "It is 21 degrees in Paris."})
    completion = client.chat.completions.create(model=model, messages=messages, tools=[WEATHER_TOOL])
    assert completion.choices[0].message.content == "It is 21 degrees in Paris."
    sent = json.dumps(mock.last_request_body())
    assert "temp_c" in sent and "get_weather" in sent
    if model.startswith("claude"):
        body = mock.last_request_body()
        blocks = [b for m in body["messages"] for b in (m["content"] if isinstance(m["content"], list) else [])]
        uses = [b for b in blocks if b.get("type") == "tool_use"]
        results = [b for b in blocks if b.get("type") == "tool_result"]
        assert uses and results and uses[0]["id"] == results[0]["tool_use_id"]
        assert uses[0]["input"] == {"city": "Paris"}


# ------------------------------------------------------------------------------------------------
# Structured output
# ------------------------------------------------------------------------------------------------


def test_response_format_json_object(client: openai.OpenAI, mock: Mock) -> None:
    completion = client.chat.completions.create(
        model="gpt-4o-mini", messages=USER, response_format={"type": "json_object"}
    )
    assert isinstance(json.loads(completion.choices[0].message.content), dict)
    assert mock.last_request_body()["response_format"] == {"type": "json_object"}


class Weather(pydantic.BaseModel):
    city: str
    temp: float


@pytest.mark.parametrize("model", ALL_MODELS)
def test_parse_with_a_pydantic_model(client: openai.OpenAI, mock: Mock, model: str) -> None:
    # The text is scripted: the mock follows a schema only where the API has a JSON mode
    # (OpenAI, Gemini); the gateway turns it into an instruction for Anthropic.
    mock.script({"text": '{"city":"Paris","temp":21.5}'})
    completion = client.chat.completions.parse(model=model, messages=USER, response_format=Weather)
    assert completion.choices[0].message.parsed == Weather(city="Paris", temp=21.5)
    sent = mock.last_request_body()
    if model.startswith("gpt"):
        rf = sent["response_format"]
        assert rf["type"] == "json_schema" and rf["json_schema"]["name"] == "Weather"
        assert rf["json_schema"]["strict"] is True
        assert set(rf["json_schema"]["schema"]["properties"]) == {"city", "temp"}
    elif model.startswith("gemini"):
        gc = sent["generationConfig"]
        assert gc["responseMimeType"] == "application/json"
        schema = gc.get("responseJsonSchema") or gc.get("responseSchema")
        assert set(schema["properties"]) == {"city", "temp"}
    else:
        assert "temp" in json.dumps(sent.get("system")), "the schema did not reach Anthropic"


def test_parse_against_the_mock_schema_following_reply(client: openai.OpenAI, mock: Mock) -> None:
    completion = client.chat.completions.parse(model="gpt-4o-mini", messages=USER, response_format=Weather)
    parsed = completion.choices[0].message.parsed
    assert isinstance(parsed, Weather)


# ------------------------------------------------------------------------------------------------
# Embeddings and models
# ------------------------------------------------------------------------------------------------


def test_embeddings_default_base64_and_explicit_float(client: openai.OpenAI, mock: Mock) -> None:
    # The SDK asks for base64 by default and decodes it to floats itself.
    raw = client.embeddings.with_raw_response.create(model="text-embedding-3-small", input=["alpha", "beta"])
    wire = raw.http_response.json()
    assert isinstance(wire["data"][0]["embedding"], str), "the SDK's default base64 request was not honoured"
    assert raw.headers.get("x-kairos-model") == "text-embedding-3-small"
    default = raw.parse()
    assert [d.index for d in default.data] == [0, 1]
    assert all(isinstance(x, float) for x in default.data[0].embedding)
    assert default.usage.prompt_tokens > 0

    floats = client.embeddings.create(model="text-embedding-3-small", input=["alpha", "beta"], encoding_format="float")
    assert len(floats.data) == 2
    for a, b in zip(default.data, floats.data):
        assert len(a.embedding) == len(b.embedding) > 0
        assert all(math.isclose(x, y, abs_tol=1e-6) for x, y in zip(a.embedding, b.embedding))
    assert floats.data[0].embedding != floats.data[1].embedding


def test_embeddings_with_a_chat_model_is_a_bad_request(client: openai.OpenAI, mock: Mock) -> None:
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model="gpt-4o-mini", input="alpha")
    assert mock.requests() == []


def test_models_list_and_retrieve(client: openai.OpenAI) -> None:
    models = {m.id: m for m in client.models.list()}
    for want in ["gpt-4o-mini", "claude-haiku-4-5", "gemini-2.5-flash", "text-embedding-3-small"]:
        assert want in models, f"{want} not listed"
        assert models[want].object == "model"
    assert models["claude-haiku-4-5"].owned_by == "anthropic"
    m = client.models.retrieve("gemini-2.5-flash")
    assert m.id == "gemini-2.5-flash" and m.object == "model"
    with pytest.raises(openai.NotFoundError) as info:
        client.models.retrieve("no-such-model")
    assert info.value.code == "model_not_found"


# ------------------------------------------------------------------------------------------------
# Errors: the SDK's exception classes
# ------------------------------------------------------------------------------------------------


def test_wrong_key_is_an_authentication_error(gw: str, mock: Mock) -> None:
    bad = openai.OpenAI(base_url=gw + "/v1", api_key="kr-not-the-master-key-0000", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as info:
        bad.chat.completions.create(model="gpt-4o-mini", messages=USER)
    assert info.value.status_code == 401
    assert info.value.code == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()
    assert mock.requests() == []


def test_unknown_model_is_not_found(client: openai.OpenAI, mock: Mock) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="gpt-99-ultra", messages=USER)
    assert info.value.code == "model_not_found"
    assert info.value.param == "model"
    assert mock.requests() == []


@pytest.mark.parametrize(
    ("kwargs", "param", "code"),
    [
        ({"temperature": 5}, "temperature", None),
        ({"n": 0}, "n", None),
        ({"extra_body": {"api_base": "http://169.254.169.254/"}}, "api_base", "caller_forbidden_field"),
        ({"extra_body": {"base_url": "http://127.0.0.1:1/"}}, "base_url", "caller_forbidden_field"),
    ],
)
def test_bad_input_is_a_bad_request(client: openai.OpenAI, mock: Mock, kwargs: dict, param: str, code) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="gpt-4o-mini", messages=USER, **kwargs)
    assert info.value.status_code == 400
    assert info.value.param == param
    if code:
        assert info.value.code == code
    assert info.value.type == "invalid_request_error"
    assert mock.requests() == [], "a bad request reached the upstream"


@pytest.mark.parametrize("model", ALL_MODELS)
def test_upstream_rate_limit_is_a_rate_limit_error_with_retry_after(client: openai.OpenAI, mock: Mock, model: str) -> None:
    mock.script({"status": 429, "retry_after": "7"})
    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(model=model, messages=USER)
    assert info.value.status_code == 429
    assert info.value.response.headers.get("retry-after") == "7"
    assert info.value.response.headers.get("x-kairos-error-source") == "provider"
    assert info.value.response.headers.get("x-kairos-request-id")
    assert info.value.code == "rate_limit_exceeded"
    assert len(mock.requests()) == 1


@pytest.mark.parametrize(
    ("upstream_status", "status", "code"),
    [
        (500, 502, "provider_server_error"),
        (502, 502, "provider_server_error"),
        (503, 503, "provider_overloaded"),
        (529, 503, "provider_overloaded"),
        (401, 502, "provider_auth"),
    ],
)
def test_upstream_failures_map_to_5xx(client: openai.OpenAI, mock: Mock, upstream_status: int, status: int, code: str) -> None:
    mock.script({"status": upstream_status, "error_message": f"boom {PROVIDER_KEYS['OPENAI_API_KEY']}"})
    with pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(model="gpt-4o-mini", messages=USER)
    assert isinstance(info.value, openai.APIStatusError)
    assert info.value.status_code == status
    assert info.value.code == code
    assert PROVIDER_KEYS["OPENAI_API_KEY"] not in info.value.response.text, "provider key leaked"


def test_upstream_error_before_the_first_chunk_is_an_http_error(client: openai.OpenAI, mock: Mock) -> None:
    mock.script({"status": 503, "retry_after": "3"})
    with pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(model="gpt-4o-mini", messages=USER, stream=True)
    assert info.value.status_code == 503
    assert info.value.response.headers.get("retry-after") == "3"


def test_sdk_retries_a_retryable_failure_through_the_gateway(gw: str, mock: Mock) -> None:
    """The gateway does not retry; the SDK does, on the status the gateway returns."""
    mock.script({"status": 503, "retry_after": "0"}, {"text": "second time lucky"})
    c = openai.OpenAI(base_url=gw + "/v1", api_key=MASTER, max_retries=1, timeout=20.0)
    completion = c.chat.completions.create(model="gpt-4o-mini", messages=USER)
    assert completion.choices[0].message.content == "second time lucky"
    assert len(mock.requests()) == 2
