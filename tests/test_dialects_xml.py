"""The telephony XML ``<Tool>`` verb: parsed to canonical tools and rendered back."""

from typing import Any

import pytest

from services.registry import dialects
from services.registry.dialects import xml
from tests.dialect_support import example, rejection, tool

RESPONSE = example("xml_contact_lookup.xml")
CONTACT_URL = "https://example.com/contactLookUp"
ENDS_ON_MISSING = {"end_conversation_on": ["missing_context_parameter"]}
NO_ARGUMENTS = {"type": "object", "properties": {}}
BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;">]>
<Tool name="x" url="https://x.example">&lol2;</Tool>"""


def contact_lookup(**fields: Any) -> Any:
    defaults: dict[str, Any] = {
        "name": "contactLookUp",
        "description": "Search/Create a contact in our contact address book",
        "parameters": NO_ARGUMENTS,
        "context_parameters": [{"name": n} for n in ("From", "To", "Session", "Domain")],
        "request": {"url": CONTACT_URL, "method": "POST"},
        "errors": ENDS_ON_MISSING,
    }
    return tool(**{**defaults, **fields})


def test_the_contact_lookup_response_document() -> None:
    assert xml.parse(RESPONSE) == [contact_lookup()]


def test_a_lone_tool_with_typed_parameters() -> None:
    document = """
    <Tool name="quote" url="https://x.example/quote">
      <Description>
        Quote a plan
      </Description>
      <Parameter name="Plan" type="enum" values="basic, pro ,team" description="The plan"/>
      <Parameter name="Seats" type="integer" required="false"/>
      <Parameter name="Vip" type="boolean" required="TRUE"/>
      <Parameter name="Budget" type="number"/>
    </Tool>"""

    assert xml.parse(document) == [
        tool(
            name="quote",
            description="Quote a plan",
            parameters=NO_ARGUMENTS,
            context_parameters=[
                {
                    "name": "Plan",
                    "type": "string",
                    "enum": ["basic", "pro", "team"],
                    "description": "The plan",
                },
                {"name": "Seats", "type": "integer", "required": False},
                {"name": "Vip", "type": "boolean"},
                {"name": "Budget", "type": "number"},
            ],
            request={"url": "https://x.example/quote"},
            errors=ENDS_ON_MISSING,
        )
    ]


def test_every_tool_at_any_depth_is_taken() -> None:
    document = """<Response>
      <Tool name="a" url="https://x.example/a"/>
      <Gather><Converse><Tool name="b" url="https://x.example/b"/></Converse></Gather>
    </Response>"""

    assert [t.name for t in xml.parse(document)] == ["a", "b"]


def test_a_document_without_tools_defines_none() -> None:
    error = rejection(lambda: dialects.parse("xml", "<Response><Say>Hi</Say></Response>"))

    assert (error.status, error.message) == (422, "the document defines no tools")


@pytest.mark.parametrize(
    ("document", "message"),
    [
        pytest.param(
            "<Tool name='x' url='https://x.example'>",
            "the document is not well-formed XML: no element found: line 1, column 39",
            id="malformed",
        ),
        pytest.param(
            BILLION_LAUGHS,
            "the document is refused: XML entities and external references are not accepted "
            "(EntitiesForbidden(name='lol', system_id=None, public_id=None))",
            id="entities",
        ),
        pytest.param(
            {"name": "x"},
            "the xml dialect takes an XML document as text",
            id="not-text",
        ),
        pytest.param(
            '<Tool url="https://x.example"/>',
            '<Tool url="https://x.example">: the name attribute is required',
            id="no-name",
        ),
        pytest.param(
            '<Tool name="x"/>',
            '<Tool name="x">: the url attribute is required',
            id="no-url",
        ),
        pytest.param(
            '<Tool name="contact lookup" url="https://x.example"/>',
            '<Tool name="contact lookup" url="https://x.example">: name must match '
            "^[A-Za-z0-9_]{1,64}$",
            id="name",
        ),
        pytest.param(
            '<Tool name="x" url="https://x.example" method="GET"/>',
            '<Tool name="x" url="https://x.example" method="GET">: unknown attribute '
            "'method' (attributes: name, url)",
            id="tool-attribute",
        ),
        pytest.param(
            '<Tool name="x" url="https://x.example"><Header name="A"/></Tool>',
            '<Tool name="x" url="https://x.example">: <Header> does not belong in a <Tool> '
            "(use Description, Parameter)",
            id="child",
        ),
        pytest.param(
            '<Tool name="x" url="https://x.example"><Parameter type="string"/></Tool>',
            '<Parameter type="string">: the name attribute is required',
            id="parameter-name",
        ),
        pytest.param(
            '<Tool name="x" url="https://x.example"><Parameter name="When" type="date"/></Tool>',
            '<Parameter name="When" type="date">: type must be one of string, integer, number, '
            "boolean, enum",
            id="type",
        ),
        pytest.param(
            '<Tool name="x" url="https://x.example"><Parameter name="Plan" type="enum"/></Tool>',
            '<Parameter name="Plan" type="enum">: type="enum" needs values, a comma-separated list',
            id="enum-values",
        ),
        pytest.param(
            '<Tool name="x" url="https://x.example"><Parameter name="Plan" values="a,b"/></Tool>',
            '<Parameter name="Plan" values="a,b">: values are only for type="enum"',
            id="values-without-enum",
        ),
        pytest.param(
            '<Tool name="x" url="https://x.example"><Parameter name="From" required="yes"/></Tool>',
            '<Parameter name="From" required="yes">: required must be true or false',
            id="required",
        ),
        pytest.param(
            '<Tool name="x" url="https://x.example"><Parameter name="From" default="1"/></Tool>',
            '<Parameter name="From" default="1">: unknown attribute \'default\' '
            "(attributes: name, description, type, required, values)",
            id="parameter-attribute",
        ),
        pytest.param(
            '<Tool name="x" url="ftp://x.example"/>',
            "tools[0].request.url: Value error, must be an absolute http:// or https:// URL",
            id="canonical-url",
        ),
        pytest.param(
            '<Tool name="x" url="https://x.example"><Parameter name="From"/>'
            '<Parameter name="From"/></Tool>',
            "tools[0]: Value error, context_parameters: duplicate names ['From']",
            id="canonical-duplicate-parameter",
        ),
    ],
)
def test_each_rule_is_a_422_quoting_the_element(document: Any, message: str) -> None:
    error = rejection(lambda: xml.parse(document))

    assert (error.status, error.code, error.message) == (422, "invalid_tool", message)


def test_every_problem_of_the_document_is_reported() -> None:
    document = '<Response><Tool name="a"/><Tool url="https://x.example"/></Response>'

    error = rejection(lambda: xml.parse(document))

    assert error.details == [
        '<Tool name="a">: the url attribute is required',
        '<Tool url="https://x.example">: the name attribute is required',
    ]


def test_export_writes_a_tool_element() -> None:
    (parsed,) = xml.parse(RESPONSE)

    assert dialects.export("xml", parsed) == (
        '<Tool name="contactLookUp" url="https://example.com/contactLookUp">\n'
        "  <Description>Search/Create a contact in our contact address book</Description>\n"
        '  <Parameter name="From" />\n'
        '  <Parameter name="To" />\n'
        '  <Parameter name="Session" />\n'
        '  <Parameter name="Domain" />\n'
        "</Tool>"
    )


def test_export_writes_only_what_differs_from_the_defaults() -> None:
    parameters = [
        {"name": "Plan", "enum": ["basic", "pro"], "description": "The plan & tier"},
        {"name": "Seats", "type": "integer", "required": False},
    ]
    exported = xml.export(contact_lookup(description="", context_parameters=parameters))

    assert exported == (
        '<Tool name="contactLookUp" url="https://example.com/contactLookUp">\n'
        '  <Parameter name="Plan" description="The plan &amp; tier" type="enum" '
        'values="basic,pro" />\n'
        '  <Parameter name="Seats" type="integer" required="false" />\n'
        "</Tool>"
    )
    assert xml.parse(exported) == [contact_lookup(description="", context_parameters=parameters)]


def test_parsing_the_export_gives_the_tool_back() -> None:
    (parsed,) = xml.parse(RESPONSE)

    assert xml.parse(xml.export(parsed)) == [parsed]


def test_arguments_from_the_llm_are_a_409() -> None:
    parameters = {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}

    error = rejection(lambda: dialects.export("xml", contact_lookup(parameters=parameters)))

    assert (error.status, error.code, error.message) == (
        409,
        "not_expressible",
        "tool 'contactLookUp' cannot be expressed in xml: xml has no way to say "
        "parameters.properties.q, parameters.required",
    )


def test_an_enumeration_of_numbers_is_a_409_naming_the_parameter() -> None:
    parameters = [{"name": "Seats", "type": "integer", "enum": ["1", "2"]}]

    error = rejection(lambda: dialects.export("xml", contact_lookup(context_parameters=parameters)))

    assert error.message == (
        "tool 'contactLookUp' cannot be expressed in xml: xml has no way to say "
        "context_parameters[0].type"
    )
