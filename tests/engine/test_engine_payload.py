"""Payloads: safe text for any bytes, and the book's messages."""

import random
from datetime import datetime, timedelta

import pytest

from webapp.engine.payload import length_reply, show, time_message


def test_show_keeps_utf8_text():
    text = "Hello, wörld ✓ 你好 😀"
    assert show(text.encode("utf-8")) == text


def test_show_empty():
    assert show(b"") == ""


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"\xff\xfe\x00", "\\xff\\xfe\x00"),
        (b"abc\x80def", "abc\\x80def"),
        (b"caf\xc3", "caf\\xc3"),  # a UTF-8 sequence cut short
        ("é".encode("latin-1") + b" ok", "\\xe9 ok"),
    ],
)
def test_show_escapes_invalid_bytes(data, expected):
    assert show(data) == expected


def test_show_never_raises_on_random_bytes():
    rng = random.Random(2024)  # seeded: the same 300 payloads on every run
    for _ in range(300):
        data = rng.randbytes(rng.randrange(0, 1200))
        text = show(data)
        assert isinstance(text, str)
        assert len(text) <= 201
        text.encode("utf-8")  # no lone surrogates: the text can go into JSON and HTML as is


def test_show_short_payload_is_not_cut():
    assert show(b"a" * 200) == "a" * 200


def test_show_truncates_long_payloads():
    assert show(b"a" * 201) == "a" * 200 + "…"
    assert show(b"a" * 65507) == "a" * 200 + "…"
    assert show(b"abcdef", limit=3) == "abc…"


def test_show_truncates_long_binary_payloads():
    text = show(b"\xff" * 1000)
    assert text.endswith("…")
    assert text.startswith("\\xff\\xff")
    assert len(text) == 201


def test_show_marks_a_cut_even_when_every_character_is_four_bytes():
    # 201 emoji are 804 bytes; the first 200 fill the limit exactly, but one more follows
    text = show("😀".encode() * 201)
    assert text == "😀" * 200 + "…"
    assert show("😀".encode() * 200) == "😀" * 200


def test_time_message_format():
    when = datetime(2026, 11, 24, 16, 53, 41, 123456)
    assert time_message(when) == "The time is 2026-11-24 16:53:41.123456"


def test_time_message_defaults_to_now():
    message = time_message()
    prefix = "The time is "
    assert message.startswith(prefix)
    when = datetime.fromisoformat(message.removeprefix(prefix))
    assert abs(datetime.now() - when) < timedelta(seconds=5)


def test_length_reply():
    assert length_reply(12) == "Your data was 12 bytes long"
