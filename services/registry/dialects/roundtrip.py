"""Where two canonical tools differ, as dotted field paths.

A dialect renders a tool only when parsing the rendering gives the same tool
back; the paths where it does not are what the dialect cannot express.
"""

from typing import Any


def differences(expected: Any, actual: Any, path: str = "") -> list[str]:
    """The paths (``request.headers.X``, ``context_parameters[0].type``) whose values differ."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        keys = [*expected, *(key for key in actual if key not in expected)]
        return [
            difference
            for key in keys
            for difference in differences(
                expected.get(key), actual.get(key), f"{path}.{key}" if path else str(key)
            )
        ]
    if isinstance(expected, list) and isinstance(actual, list) and len(expected) == len(actual):
        return [
            difference
            for index, (left, right) in enumerate(zip(expected, actual, strict=True))
            for difference in differences(left, right, f"{path}[{index}]")
        ]
    return [] if expected == actual else [path or "(the tool)"]
