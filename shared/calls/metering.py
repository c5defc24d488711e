"""Metering: token counts with the real o200k_base tokenizer, and prices.

Arguments and results are counted as compact JSON (no spaces, UTF-8 kept),
the form closest to what an LLM reads and writes.
"""

import json
import os
from functools import cache
from pathlib import Path
from typing import Any

import tiktoken
from pydantic import BaseModel, Field

ENCODING = "o200k_base"
# tiktoken reads a vocabulary through its cache, a file named by the SHA-1 of its download
# URL and checked against the SHA-256 tiktoken pins; o200k_base ships in this one, so
# counting works offline and nothing is downloaded at start. (tiktoken: about 80 MB in
# memory, half what bpe-openai took for the same counts.)
VOCABULARIES = Path(__file__).with_name("tiktoken_cache")


@cache
def _encoding() -> tiktoken.Encoding:
    os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(VOCABULARIES))
    return tiktoken.get_encoding(ENCODING)


def count_tokens(text: str) -> int:
    # Ordinary text throughout: a caller who says "<|endoftext|>" is counted, not refused.
    return len(_encoding().encode_ordinary(text))


def count_json_tokens(value: Any) -> int:
    if value is None:
        return 0
    return count_tokens(json.dumps(value, separators=(",", ":"), ensure_ascii=False))


class Price(BaseModel):
    per_call: float = Field(default=0.1, ge=0)
    per_1k_tokens: float = Field(default=5.0, ge=0)

    def units(self, input_tokens: int, output_tokens: int) -> float:
        return round(self.per_call + self.per_1k_tokens * (input_tokens + output_tokens) / 1000, 6)


class PriceBook(BaseModel):
    """The default price and per-account overrides."""

    default: Price = Field(default_factory=Price)
    accounts: dict[str, Price] = Field(default_factory=dict)

    def for_account(self, account_id: str) -> Price:
        return self.accounts.get(account_id, self.default)
