"""The OpenAI <-> TensorRT-LLM mapping and KServe v2 tensor codecs (no servers)."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
from tritonclient.grpc import service_pb2 as pb2
from tritonclient.utils import deserialize_bytes_tensor, serialize_byte_tensor

from expert_router.errors import RequestError
from expert_router.wire import kserve
from expert_router.wire import triton as tw
from expert_router.wire.sse import SSEDecoder


def test_bytes_codec_matches_tritonclient() -> None:
    items = [b"hello", b"", "żółw".encode()]
    ours = kserve.encode_bytes(items)
    theirs = serialize_byte_tensor(np.array(items, dtype=object)).item()
    assert ours == theirs
    assert kserve.decode_bytes(theirs) == items
    assert list(deserialize_bytes_tensor(ours)) == items


@pytest.mark.parametrize("raw", [b"\x05\x00", b"\x05\x00\x00\x00abc"])
def test_malformed_bytes_tensor(raw: bytes) -> None:
    with pytest.raises(RequestError, match="malformed BYTES"):
        kserve.decode_bytes(raw)


def test_decode_raw_numbers_and_errors() -> None:
    assert kserve.decode_raw("x", "INT32", struct.pack("<2i", 3, -1)) == [3, -1]
    assert kserve.decode_raw("x", "BOOL", b"\x01") == [True]
    with pytest.raises(RequestError, match="'x': 3 bytes is not a whole INT32"):
        kserve.decode_raw("x", "INT32", b"abc")
    with pytest.raises(RequestError, match="unsupported datatype"):
        kserve.decode_raw("x", "FP16", b"ab")


def test_from_tensors_checks_and_names_fields() -> None:
    req = tw.from_tensors(
        {
            "text_input": [b"hi"],
            "max_tokens": [7],
            "stream": [False],
            "top_k": [4],
            "temperature": [1],
            "stop_words": [b"END", b""],
        }
    )
    assert (req.text, req.max_tokens, req.stream, req.top_k) == ("hi", 7, False, 4)
    assert req.temperature == 1.0 and req.stop_words == ["END"]
    with pytest.raises(RequestError, match="'text_input' is required") as e:
        tw.from_tensors({"max_tokens": [3]})
    assert e.value.param == "text_input"
    with pytest.raises(RequestError, match="'max_tokens' is required"):
        tw.from_tensors({"text_input": [b"x"]})
    with pytest.raises(RequestError, match="'max_tokens' must be >= 1"):
        tw.from_tensors({"text_input": [b"x"], "max_tokens": [0]})
    with pytest.raises(RequestError, match="input 'max_tokens': expected int"):
        tw.from_tensors({"text_input": [b"x"], "max_tokens": [2.5]})
    with pytest.raises(RequestError, match="not UTF-8"):
        tw.from_tensors({"text_input": [b"\xff"], "max_tokens": [1]})


def test_openai_chat_goes_through_the_template() -> None:
    payload = {
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "hi"}]},
        ],
        "max_tokens": 5,
        "min_tokens": 5,
        "ignore_eos": True,
        "temperature": 0.0,
        "top_p": 0.9,
        "stop": ["\n\n", ""],
        "stream": True,
    }
    req = tw.openai_to_triton(payload, tw.TEMPLATES["chatml"])
    assert req.text == (
        "<|im_start|>system\nbe brief<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert (req.max_tokens, req.min_length, req.end_id, req.stream) == (5, 5, -1, True)
    assert req.temperature == 0.0 and req.top_p == 0.9 and req.stop_words == ["\n\n"]
    plain = tw.openai_to_triton({"prompt": "abc", "max_tokens": 2}, tw.TEMPLATES["plain"])
    assert plain.text == "abc" and plain.stream is False and plain.end_id is None


def test_openai_values_are_checked_against_their_tensors() -> None:
    """What an INT32 or FP32 tensor can hold is accepted (null as absent, ``max_tokens``
    before ``max_completion_tokens``); anything else is the client's RequestError, naming
    the field, before a request is built."""
    plain = tw.TEMPLATES["plain"]
    ok = tw.openai_to_triton(
        {"prompt": "a", "max_tokens": None, "max_completion_tokens": 2**31 - 1, "top_k": -1,
         "temperature": 3.4e38, "top_p": 1, "min_tokens": 0},
        plain,
    )  # fmt: skip
    assert (ok.max_tokens, ok.top_k, ok.temperature, ok.top_p, ok.min_length) == (
        2**31 - 1, -1, 3.4e38, 1.0, 0
    )  # fmt: skip
    assert tw.openai_to_triton({"prompt": "a"}, plain).max_tokens == 256
    for key, value in [
        ("max_tokens", 0), ("max_tokens", True), ("max_tokens", 2.0), ("max_tokens", 2**31),
        ("max_completion_tokens", "9"), ("min_tokens", -1), ("top_k", -(2**31) - 1),
        ("temperature", 3.5e38), ("temperature", False), ("top_p", [0.5]),
    ]:  # fmt: skip
        with pytest.raises(RequestError) as err:
            tw.openai_to_triton({"prompt": "a", key: value}, plain)
        assert err.value.param == key, (key, value)


def test_triton_to_openai_asks_for_exact_lengths() -> None:
    req = tw.TritonRequest("q", 9, min_length=9, top_k=3, stop_words=["x"])
    body = tw.triton_to_openai(req, "m")
    assert body == {
        "prompt": "q",
        "max_tokens": 9,
        "stream": True,
        "model": "m",
        "top_k": 3,
        "min_tokens": 9,
        "ignore_eos": True,
        "stop": ["x"],
    }
    assert "ignore_eos" not in tw.triton_to_openai(tw.TritonRequest("q", 9, min_length=2))


def test_url_query_configures_model_template_and_names() -> None:
    t = tw.target_from_query("model=llama&template=llama3&tensor.text_input=prompt")
    assert t.names.model == "llama" and t.names["text_input"] == "prompt"
    assert t.names.canonical("prompt") == "text_input" and t.names["max_tokens"] == "max_tokens"
    assert t.template is tw.TEMPLATES["llama3"]
    with pytest.raises(RequestError, match="unknown 'nope'"):
        tw.target_from_query("template=nope")
    with pytest.raises(RequestError, match="unknown Triton URL option 'colour'"):
        tw.target_from_query("colour=red")


def test_protobuf_request_round_trip_with_renamed_tensors() -> None:
    names = tw.TritonNames("ens", (("text_input", "prompt"),))
    req = tw.TritonRequest("hello", 4, stream=True, min_length=4, temperature=0.5, bad_words=["a"])
    msg = kserve.infer_request(pb2, req, names, "r1")
    assert msg.model_name == "ens" and msg.id == "r1"
    assert [t.name for t in msg.inputs][:3] == ["prompt", "max_tokens", "stream"]
    back = tw.from_tensors(kserve.request_values(msg, names))
    assert back == req
    with pytest.raises(RequestError, match="unexpected inference input 'prompt'"):
        kserve.request_values(msg, tw.TritonNames())


def test_typed_contents_and_datatype_checks() -> None:
    msg = pb2.ModelInferRequest(model_name="ensemble")
    t = msg.inputs.add(name="text_input", datatype="BYTES", shape=[1, 1])
    t.contents.bytes_contents.append(b"typed")
    m = msg.inputs.add(name="max_tokens", datatype="INT32", shape=[1, 1])
    m.contents.int_contents.append(3)
    req = tw.from_tensors(kserve.request_values(msg, tw.TritonNames()))
    assert (req.text, req.max_tokens) == ("typed", 3)
    bad = pb2.ModelInferRequest(model_name="ensemble")
    bad.inputs.add(name="text_input", datatype="INT32", shape=[1])
    with pytest.raises(RequestError, match="datatype INT32, expected BYTES"):
        kserve.request_values(bad, tw.TritonNames())


def test_text_response_and_final_flag() -> None:
    names = tw.TritonNames()
    mid = kserve.text_response(pb2, "ensemble", "r", " tok", names, final=None)
    assert kserve.response_text(mid, names) == " tok" and not kserve.is_final(mid)
    assert tw.FINAL not in mid.parameters
    last = kserve.text_response(pb2, "ensemble", "r", " end", names, final=True)
    assert kserve.response_text(last, names) == " end" and kserve.is_final(last)
    empty = kserve.text_response(pb2, "ensemble", "r", "", names, final=True)
    assert not empty.outputs and kserve.is_final(empty)
    meta = kserve.model_metadata(pb2, "ensemble", names)
    assert {i.name for i in meta.inputs} >= {"text_input", "max_tokens", "stream", "min_length"}
    assert meta.outputs[0].name == "text_output"


@pytest.mark.parametrize("chat", [True, False])
def test_openai_chunks_parse_back(chat: bool) -> None:
    enc = tw.OpenAIChunks(chat, "m", "id1")
    stream = enc.role + enc.piece(' a"b') + enc.last("\n", "length")
    events = list(SSEDecoder().feed(stream))
    assert events[-1] == "[DONE]"
    got = [tw.openai_event_text(e) for e in events[:-1]]
    assert got[-2:] == [(' a"b', None), ("\n", "length")]
    full = json.loads(enc.full("xyz", "stop"))
    assert tw.openai_event_text(json.dumps(full)) == ("xyz", "stop")
    with pytest.raises(RequestError, match="boom"):
        tw.openai_event_text('{"error": {"message": "boom"}}')


@pytest.mark.parametrize(
    "event",
    [
        '{"choices": [1]}',
        '{"choices": {"a": 1}}',
        '{"choices": "x"}',
        '{"choices": [{"delta": "x"}]}',
        '{"choices": [{"message": [1]}]}',
        "[1]",
    ],
)
def test_an_event_not_shaped_as_openai_has_no_text(event: str) -> None:
    """An upstream's event of another shape is no text (it used to raise AttributeError or
    KeyError in the relay and leave the gRPC call waiting)."""
    assert tw.openai_event_text(event) == ("", None)


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"max_tokens": [2**40]}, "max_tokens"),
        ({"top_k": [-(2**31) - 1]}, "top_k"),
        ({"stop_words": [b"ok", b"\xff\xfe"]}, "stop_words"),
        ({"bad_words": [b"\xc3"]}, "bad_words"),
    ],
)
def test_inputs_the_upstream_request_cannot_carry_are_the_requests_fault(
    extra: dict[str, list[object]], param: str
) -> None:
    """An INT32 input beyond its range (a client may send INT64) or a word that is not UTF-8
    is refused here (INVALID_ARGUMENT), not while the upstream request is built (where it
    raised and the replica was blamed)."""
    values: dict[str, list[object]] = {"text_input": [b"hi"], "max_tokens": [4], **extra}
    with pytest.raises(RequestError) as info:
        tw.from_tensors(values)  # type: ignore[arg-type]
    assert info.value.param == param
