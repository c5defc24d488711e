"""``midcall tools import``: a platform's file, through the registry's REST API."""

import asyncio
import json
from pathlib import Path

import pytest

from services.tool_import import import_document, import_tools
from tests.support.fabric import Fabric
from tests.support.keys import ADMIN_KEY

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


async def test_importing_an_example_registers_its_tools(
    fabric: Fabric, capsys: pytest.CaptureFixture[str]
) -> None:
    registry = str(fabric.registry.base_url)

    code = await asyncio.to_thread(
        import_tools, registry, ADMIN_KEY, EXAMPLES / "xml_contact_lookup.xml", "importer", "xml"
    )

    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    stored = (await fabric.registry.get("/v1/agents/importer/tools/contactLookUp")).json()
    assert printed == stored
    assert [p["name"] for p in stored["context_parameters"]] == ["From", "To", "Session", "Domain"]


async def test_a_rejected_document_exits_1_with_the_registrys_message(
    fabric: Fabric, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "tool.xml"
    broken.write_text('<Tool name="x"/>')

    code = await asyncio.to_thread(
        import_tools, str(fabric.registry.base_url), ADMIN_KEY, broken, "importer", "xml"
    )

    assert code == 1
    assert capsys.readouterr().err == (
        'rejected (422): <Tool name="x">: the url attribute is required\n'
    )


@pytest.mark.parametrize("dialect", ["callkaro", "midcall"])
async def test_a_python_file_is_registered_as_a_python_tool(
    fabric: Fabric, capsys: pytest.CaptureFixture[str], dialect: str
) -> None:
    file = EXAMPLES / "callkaro_get_weather.py"

    code = await asyncio.to_thread(
        import_tools, str(fabric.registry.base_url), ADMIN_KEY, file, "importer", dialect
    )

    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    stored = (await fabric.registry.get("/v1/agents/importer/tools/get_weather")).json()
    assert printed == stored
    assert (stored["kind"], stored["python"]["code"]) == ("python", file.read_text())


def test_a_python_file_is_sent_in_the_document_its_dialect_holds_code_in(tmp_path: Path) -> None:
    file = tmp_path / "tool.py"
    file.write_text("async def tool(ctx: RunContext) -> dict: ...\n")

    assert json.loads(import_document(file, "callkaro")) == {
        "mode": "advanced",
        "code": "async def tool(ctx: RunContext) -> dict: ...\n",
    }
    assert json.loads(import_document(file, "midcall")) == {
        "kind": "python",
        "python": {"code": "async def tool(ctx: RunContext) -> dict: ...\n"},
    }


def test_a_python_file_in_a_dialect_without_code_exits_2(
    capsys: pytest.CaptureFixture[str],
) -> None:
    file = EXAMPLES / "callkaro_get_weather.py"

    code = import_tools("http://127.0.0.1:9", ADMIN_KEY, file, "a", "vocode")

    assert code == 2
    assert capsys.readouterr().err == (
        f"cannot import {file}: a .py file is a python tool: "
        "import it with --dialect callkaro or midcall\n"
    )


def test_an_unreadable_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = import_tools("http://127.0.0.1:9", ADMIN_KEY, tmp_path / "missing.json", "a", "midcall")

    assert code == 2
    assert capsys.readouterr().err.startswith("cannot read ")
