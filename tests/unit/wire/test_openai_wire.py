"""Request checks, the text the classifier reads, model rewriting, SSE encode/decode."""

from __future__ import annotations

import json
import sys

import pytest

from expert_router.errors import RequestError
from expert_router.wire.openai import classify_text, error_body, parse_body, with_model
from expert_router.wire.sse import SSEDecoder, encode_event

CONV = {
    "model": "m",
    "messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "an answer"},
        {"role": "user", "content": [{"type": "text", "text": "second"}, {"type": "image_url"}]},
    ],
}


def test_classify_text_modes() -> None:
    req = parse_body(json.dumps(CONV).encode(), "chat")
    assert classify_text(req, "last_user") == "second"
    assert classify_text(req, "all_user") == "first question\nsecond"
    assert classify_text(req, "full") == "be brief\nfirst question\nan answer\nsecond"
    only_system = parse_body(b'{"messages": [{"role": "system", "content": "x"}]}', "chat")
    assert classify_text(only_system) == "x"
    comp = parse_body(b'{"prompt": ["a", "b", 3]}', "completion")
    assert classify_text(comp) == "a\nb"
    assert classify_text(parse_body(b'{"prompt": "p"}', "completion"), "full") == "p"


def test_parse_keeps_unknown_fields_and_reads_flags() -> None:
    req = parse_body(b'{"prompt": "x", "stream": true, "model": "m", "foo": [1]}', "completion")
    assert (req.kind, req.stream, req.model, req.payload["foo"]) == ("completion", True, "m", [1])
    assert parse_body(b'{"prompt": "x", "stream": null}', "completion").stream is False


@pytest.mark.parametrize(
    ("body", "kind", "param"),
    [
        (b"nope", "chat", None),
        (b"\xff\xfe", "chat", None),
        (b'"str"', "chat", None),
        (b"{}", "chat", "messages"),
        (b'{"messages": {}}', "chat", "messages"),
        (b'{"messages": [{"role": 1}]}', "chat", "messages[0].role"),
        (
            b'{"messages": [{"role": "user"}, {"role": "user", "content": 1}]}',
            "chat",
            "messages[1].content",
        ),  # fmt: skip
        (b'{"prompt": true}', "completion", "prompt"),
        (b'{"prompt": [true]}', "completion", "prompt"),
        (b'{"prompt": "x", "stream": 1}', "completion", "stream"),
        (b'{"prompt": "x", "model": []}', "completion", "model"),
    ],
)
def test_errors_name_param(body: bytes, kind: str, param: str | None) -> None:
    with pytest.raises(RequestError) as info:
        parse_body(body, kind)  # type: ignore[arg-type]
    assert info.value.param == param


def test_with_model_rewrites_only_when_needed() -> None:
    raw = b'{"model": "a",  "prompt": "x", "extra": {"k": 1}}'
    req = parse_body(raw, "completion")
    assert with_model(req, raw, None) is raw
    assert with_model(req, raw, "a") is raw
    assert json.loads(with_model(req, raw, "b")) == {"model": "b", "prompt": "x", "extra": {"k": 1}}


LONG = b'{"model": "a", "prompt": "x", "seed": 123456789012345678901234567890, "n": -9223372036854775809}'  # noqa: E501


@pytest.mark.parametrize("raw", [LONG, b"\xef\xbb\xbf" + LONG])
def test_with_model_keeps_integers_beyond_64_bits_exact(raw: bytes) -> None:
    req = parse_body(raw, "completion")
    assert isinstance(req.payload["seed"], float)  # what orjson reads
    sent = json.loads(with_model(req, raw, "b"))
    assert sent == {
        "model": "b", "prompt": "x", "seed": 123456789012345678901234567890,
        "n": -9223372036854775809,
    }  # fmt: skip


def test_with_model_reads_again_only_what_may_hold_a_long_integer() -> None:
    raw = b'{"model": "a", "prompt": "call 1234567890123456789012", "t": 0.5}'
    req = parse_body(raw, "completion")
    sent = json.loads(with_model(req, raw, "b"))
    assert sent == {"model": "b", "prompt": "call 1234567890123456789012", "t": 0.5}


@pytest.mark.parametrize("n", [b"1", b"12345678901234567890123"])
def test_with_model_rewrites_as_deep_a_body_as_it_reads(n: bytes) -> None:
    # 1022 levels: parse_json's limit, past the standard library's default recursion limit
    deep = b'{"model": "a", "prompt": "x", "n": ' + n + b', "d": ' + b"[" * 1021
    deep += b"]" * 1021 + b"}"
    req = parse_body(deep, "completion")
    out = with_model(req, deep, "b")
    assert out.count(b"[") == 1021
    sent = json.loads(out.replace(b"[" * 1021, b"[").replace(b"]" * 1021, b"]"))
    assert sent == {"model": "b", "prompt": "x", "n": int(n), "d": []}
    assert sys.getrecursionlimit() == 1000


def test_error_body_shape() -> None:
    assert error_body("m", param="p", code="c") == {
        "error": {"message": "m", "type": "invalid_request_error", "param": "p", "code": "c"}
    }


def test_sse_round_trip_in_arbitrary_pieces() -> None:
    stream = encode_event({"a": 1}) + b"data: [DONE]\r\n\r\n" + b": comment\n\n"
    for size in (1, 2, 5, len(stream)):
        d = SSEDecoder()
        out = [e for i in range(0, len(stream), size) for e in d.feed(stream[i : i + size])]
        assert out == ['{"a":1}', "[DONE]"]
    multi = SSEDecoder()
    assert list(multi.feed(b"data: a\ndata: b\n\n")) == ["a\nb"]


def test_json_is_utf8_with_an_optional_byte_order_mark() -> None:
    body = json.dumps({"prompt": "café", "stream": True}, ensure_ascii=False).encode()
    assert parse_body(b"\xef\xbb\xbf" + body, "completion").payload["prompt"] == "café"
    for bad in (body.decode().encode("utf-16"), b'{"prompt": "\xed\xa0\x80"}'):  # lone surrogate
        with pytest.raises(RequestError, match="not UTF-8"):
            parse_body(bad, "completion")
    with pytest.raises(RequestError, match="NaN is not JSON"):
        parse_body(b'{"prompt": "a", "temperature": NaN}', "completion")


def test_json_refuses_what_has_no_exact_reading() -> None:
    """A lone surrogate escape and a number beyond a double are refused (the standard
    library would read them as an unpaired code point and as infinity); deep nesting is
    an error, never a RecursionError; a big integer reads as a float."""
    for bad, why in (
        (b'{"prompt": "\\ud800"}', "surrogate"),
        (b'{"prompt": "a", "temperature": 1e400}', "infinity"),
        (b'{"prompt": ' + b"[" * 5000 + b"]" * 5000 + b"}", "deep"),
        (b"", "Expecting value"),
    ):
        with pytest.raises(RequestError, match=why) as info:
            parse_body(bad, "completion")
        assert info.value.code == "invalid_json"
    big = parse_body(b'{"prompt": "a", "seed": 123456789012345678901234567890}', "completion")
    assert big.payload["seed"] == pytest.approx(1.2345678901234568e29)
    paired = parse_body(b'{"prompt": "\\ud83d\\ude00"}', "completion")
    assert paired.payload["prompt"] == "\U0001f600"
