"""Prompts rendered with a conversation's variables."""

from shared.conversations import render_prompt


def test_set_variables_fill_in_and_unset_ones_render_empty_and_are_listed() -> None:
    text, unset = render_prompt(
        "Total {{order_price}} for {{name}}; {{ order_price }} again; {{who.first}} {{missing}}",
        {"order_price": 12.5, "name": "Ana", "who": {"first": "Bo"}},
    )

    assert text == "Total 12.5 for Ana; 12.5 again; Bo "
    assert unset == ["missing"]


def test_a_template_without_variables_is_left_as_it_is() -> None:
    assert render_prompt("Hello {name} and {{ }}", {}) == ("Hello {name} and {{ }}", [])
