"""Token counts from the real o200k_base tokenizer, and prices.

The pinned token ids were checked independently: bpe-openai 0.1.4, an
implementation of its own, gives the same ids for every string below. "hello
world" -> [24912, 2375] and "Hello, world!" -> [13225, 11, 2375, 0] are also the
widely published ids.
"""

import json

import pytest
import tiktoken.load

from shared.calls.metering import (
    ENCODING,
    Price,
    PriceBook,
    _encoding,
    count_json_tokens,
    count_tokens,
)

KNOWN_IDS = {
    "hello world": [24912, 2375],
    "Hello, world!": [13225, 11, 2375, 0],
    "": [],
    "Got it - one second while I book that.": [
        52301,
        480,
        533,
        1001,
        3099,
        2049,
        357,
        2392,
        484,
        13,
    ],
    "1234567890": [7633, 19354, 29338, 15],
    "Grüße aus München 🎉": [3193, 572, 13153, 3976, 61963, 139786, 231],
    "नमस्ते, आपका अपॉइंटमेंट बुक हो गया है": [
        998,
        1637,
        14681,
        628,
        11,
        101760,
        9250,
        9777,
        11754,
        28349,
        95199,
        2139,
        21673,
        5492,
        15686,
        2487,
    ],
    "  multiple   spaces\n\nnew lines\t": [220, 7598, 256, 18608, 279, 1389, 8698, 197],
}

ARGUMENTS = {"date": "2024-04-20", "time": "10:00 AM", "service": "Haircut"}
RESULT = {"success": True, "stylist_name": "Ana"}


def test_the_encoding_is_o200k_base() -> None:
    assert ENCODING == "o200k_base"


def test_the_vocabulary_ships_with_midcall(monkeypatch: pytest.MonkeyPatch) -> None:
    # Counting works offline: tiktoken finds o200k_base in Midcall's cache, checked against
    # the hash it pins (a download, or a file that failed the check, would read it anew).
    def no_download(blobpath: str) -> bytes:
        raise AssertionError(f"tiktoken went to fetch {blobpath}")

    monkeypatch.setattr(tiktoken.load, "read_file", no_download)
    monkeypatch.delenv("TIKTOKEN_CACHE_DIR", raising=False)
    _encoding.cache_clear()

    assert count_tokens("hello world") == 2


@pytest.mark.parametrize(("text", "ids"), KNOWN_IDS.items())
def test_token_ids_match_the_published_o200k_base(text: str, ids: list[int]) -> None:
    assert _encoding().encode(text) == ids
    assert count_tokens(text) == len(ids)


def test_json_is_counted_compact() -> None:
    compact = '{"date":"2024-04-20","time":"10:00 AM","service":"Haircut"}'

    assert count_json_tokens(ARGUMENTS) == count_tokens(compact) == 22
    assert count_tokens(json.dumps(ARGUMENTS)) > 22  # the spaced form costs more
    assert count_json_tokens(RESULT) == 11


def test_json_keeps_utf8_instead_of_escapes() -> None:
    value = {"greeting": "Grüße aus München"}

    assert count_json_tokens(value) == count_tokens('{"greeting":"Grüße aus München"}')
    assert count_json_tokens(value) < count_tokens(json.dumps(value, separators=(",", ":")))


def test_special_token_text_is_counted_as_ordinary_text() -> None:
    # A caller may say anything; what looks like a control token is just text to bill.
    assert count_tokens("hi <|endoftext|> there") == len(
        _encoding().encode("hi <|endoftext|> there", disallowed_special=())
    )
    assert count_json_tokens({"note": "<|endoftext|>"}) > 0


def test_nothing_costs_no_tokens() -> None:
    assert count_json_tokens(None) == 0
    assert count_json_tokens("") == 1  # the two quotes of an empty JSON string


def test_default_price_is_a_tenth_per_call_plus_five_per_thousand_tokens() -> None:
    assert Price().units(0, 0) == 0.1
    assert Price().units(21, 14) == 0.275
    assert Price().units(22, 11) == 0.265
    assert Price().units(1000, 0) == 5.1


def test_an_account_price_overrides_the_default() -> None:
    book = PriceBook(accounts={"acme": Price(per_call=0.0, per_1k_tokens=1.0)})

    assert book.for_account("acme").units(500, 500) == 1.0
    assert book.for_account("other").units(500, 500) == 5.1
    assert book.for_account("other") == Price()


def test_prices_are_never_negative() -> None:
    with pytest.raises(ValueError, match="greater than or equal to 0"):
        Price(per_call=-1)
