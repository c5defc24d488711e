"""Helpers for the dialect tests: the examples/ documents and the errors parsers raise."""

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from shared.contract.tools import Tool
from shared.process.http_api import ApiError

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def example(name: str) -> Any:
    """An examples/ document as posted: JSON values, or text (XML, a Python function)."""
    text = (EXAMPLES / name).read_text(encoding="utf-8")
    return text if name.endswith((".xml", ".py")) else json.loads(text)


def rejection(call: Callable[[], object]) -> ApiError:
    """The ApiError ``call`` raises."""
    with pytest.raises(ApiError) as raised:
        call()
    return raised.value


def tool(**fields: Any) -> Tool:
    return Tool.model_validate(fields)
