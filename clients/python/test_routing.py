"""model="auto" through the official OpenAI SDK: routing, receipts and the dry run."""

from __future__ import annotations

import time
from typing import Iterator

import httpx
import openai
import pytest

from conftest import MASTER

SUMMARY = (
    "Summarize the following article in two sentences:\n\n"
    "The city council met on Tuesday to discuss the new budget. After hours of debate, members "
    "approved a plan that increases funding for public parks and libraries while cutting "
    "administrative costs. The mayor praised the decision."
)


@pytest.fixture
def client(gw: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=gw + "/v1", api_key=MASTER, max_retries=0) as c:
        yield c


def fetch_receipt(http: httpx.Client, rid: str) -> dict:
    # Ledger rows are written off the request path: poll briefly.
    for _ in range(100):
        r = http.get(f"/v1/receipts/{rid}", headers={"Authorization": f"Bearer {MASTER}"})
        if r.status_code == 200:
            return r.json()
        time.sleep(0.02)
    raise AssertionError(f"no receipt {rid}: {r.status_code} {r.text}")


def test_auto_with_the_sdk_and_its_receipt(client: openai.OpenAI, http: httpx.Client) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": SUMMARY}]
    )
    completion = raw.parse()
    assert completion.choices[0].message.content
    rid = raw.headers["x-kairos-receipt-id"]
    assert raw.headers["x-kairos-task"] == "summarization"
    chosen = raw.headers["x-kairos-model"]
    assert chosen != "auto"
    receipt = fetch_receipt(http, rid)
    assert receipt["chosen"] == chosen
    assert receipt["classification"]["task"] == "summarization"
    assert receipt["actual"]["status_code"] == 200
    assert receipt["summary"].startswith("classified as summarization")


def test_auto_streams(client: openai.OpenAI) -> None:
    with client.chat.completions.with_streaming_response.create(
        model="kairos/auto",
        messages=[{"role": "user", "content": "Write a haiku about autumn leaves."}],
        stream=True,
        stream_options={"include_usage": True},
    ) as resp:
        assert resp.headers["x-kairos-task"]
        text = ""
        usage = None
        for chunk in resp.parse():
            if chunk.choices and chunk.choices[0].delta.content:
                text += chunk.choices[0].delta.content
            if chunk.usage:
                usage = chunk.usage
    assert text
    assert usage is not None and usage.completion_tokens > 0


def test_options_through_extra_body_and_headers(client: openai.OpenAI, http: httpx.Client) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="auto",
        messages=[{"role": "user", "content": SUMMARY}],
        extra_body={"kairos": {"quality": "premium", "models": ["claude-sonnet-4-5", "gpt-4o-mini"]}},
    )
    assert raw.headers["x-kairos-model"] in ("claude-sonnet-4-5", "gpt-4o-mini")
    receipt = fetch_receipt(http, raw.headers["x-kairos-receipt-id"])
    assert receipt["bar"] == {"value": receipt["bar"]["value"], "source": "body", "tier": "premium"}

    raw = client.chat.completions.with_raw_response.create(
        model="auto",
        messages=[{"role": "user", "content": SUMMARY}],
        extra_headers={"x-kairos-quality": "economy"},
    )
    receipt = fetch_receipt(http, raw.headers["x-kairos-receipt-id"])
    assert receipt["bar"]["source"] == "header"

    with pytest.raises(openai.UnprocessableEntityError) as e:
        client.chat.completions.create(
            model="auto",
            messages=[{"role": "user", "content": SUMMARY}],
            extra_body={"kairos": {"strict": True, "max_cost_usd": 0.0000001}},
        )
    assert e.value.code == "caller_no_route"

    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(
            model="auto",
            messages=[{"role": "user", "content": SUMMARY}],
            extra_headers={"x-kairos-quality": "platinum"},
        )


def test_dry_run_calls_no_model(client: openai.OpenAI, mock) -> None:
    # The SDK's generic POST reaches any route with the same auth.
    receipt = client.post(
        "/route",
        cast_to=httpx.Response,
        body={"model": "auto", "messages": [{"role": "user", "content": "Translate into French: good morning"}]},
    ).json()
    assert receipt["classification"]["task"] == "translation"
    assert receipt["chosen"]
    assert mock.requests() == []
