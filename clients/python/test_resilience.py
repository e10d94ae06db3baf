"""Fallbacks and streaming fault semantics as the official SDKs see them.

`py-fallback` (conftest.py) is a fallback strategy: gpt-4o-mini (OpenAI wire format at the mock),
then claude-haiku-4-5 (Anthropic wire format). Before a stream's first content chunk the gateway
may still switch targets and the SDK must see one clean stream; after it, a fault must raise.
"""

from __future__ import annotations

from typing import Iterator

import anthropic
import openai
import pytest

from conftest import MASTER, Mock

USER = [{"role": "user", "content": "Say hello."}]


@pytest.fixture
def client(gw: str) -> Iterator[openai.OpenAI]:
    c = openai.OpenAI(base_url=gw + "/v1", api_key=MASTER, max_retries=0, timeout=20.0)
    yield c
    c.close()


@pytest.fixture
def aclient(gw: str) -> Iterator[anthropic.Anthropic]:
    c = anthropic.Anthropic(base_url=gw, api_key=MASTER, max_retries=0, timeout=20.0)
    yield c
    c.close()


def upstream_models(mock: Mock) -> list[str]:
    return [c["model"] for c in mock.ledger()]


def test_non_stream_falls_back_on_a_503(client: openai.OpenAI, mock: Mock) -> None:
    mock.script({"status": 503}, model="gpt-4o-mini")
    raw = client.chat.completions.with_raw_response.create(model="py-fallback", messages=USER)
    completion = raw.parse()
    assert completion.choices[0].message.content
    assert raw.headers["x-kairos-model"] == "claude-haiku-4-5"
    assert raw.headers["x-kairos-attempts"] == "2"
    assert raw.headers["x-kairos-fallbacks"] == "1"
    assert upstream_models(mock) == ["gpt-4o-mini", "claude-haiku-4-5"]


@pytest.mark.parametrize("fault", ["error_event_after", "cut_after", "malformed_after"])
def test_stream_fault_before_content_is_invisible(client: openai.OpenAI, mock: Mock, fault: str) -> None:
    mock.script({"stream_fault": {fault: 0}}, model="gpt-4o-mini")
    raw = client.chat.completions.with_raw_response.create(model="py-fallback", messages=USER, stream=True)
    assert raw.headers["x-kairos-model"] == "claude-haiku-4-5"
    chunks = list(raw.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    assert chunks[-1].choices[0].finish_reason == "stop"
    roles = [c for c in chunks if c.choices and c.choices[0].delta.role == "assistant"]
    assert len(roles) == 1, "a second preamble reached the client"
    assert upstream_models(mock) == ["gpt-4o-mini", "claude-haiku-4-5"]


def test_stream_fault_after_content_raises_and_is_not_retried(client: openai.OpenAI, mock: Mock) -> None:
    mock.script({"chunks": 6, "stream_fault": {"cut_after": 2}}, model="gpt-4o-mini")
    stream = client.chat.completions.create(model="py-fallback", messages=USER, stream=True)
    received = []
    with pytest.raises(openai.APIError) as info:
        for chunk in stream:
            received.append(chunk)
    assert info.value.code == "upstream_cut"
    assert any(c.choices and c.choices[0].delta.content for c in received)
    assert upstream_models(mock) == ["gpt-4o-mini"], "bytes had reached the client: no second target"
    billed = mock.ledger()[0]
    assert not billed["completed"] and billed["completion_tokens"] > 0


def test_anthropic_sdk_stream_falls_back_before_content(aclient: anthropic.Anthropic, mock: Mock) -> None:
    mock.script({"stream_fault": {"error_event_after": 0}}, model="gpt-4o-mini")
    with aclient.messages.stream(model="py-fallback", max_tokens=64, messages=USER) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text
    assert final.stop_reason == "end_turn"
    assert upstream_models(mock) == ["gpt-4o-mini", "claude-haiku-4-5"]


def test_anthropic_sdk_sees_a_cut_after_content_as_an_error(aclient: anthropic.Anthropic, mock: Mock) -> None:
    mock.script({"chunks": 6, "stream_fault": {"cut_after": 2}}, model="gpt-4o-mini")
    with pytest.raises(anthropic.APIError):
        with aclient.messages.stream(model="py-fallback", max_tokens=64, messages=USER) as stream:
            for _ in stream.text_stream:
                pass
    assert upstream_models(mock) == ["gpt-4o-mini"]
