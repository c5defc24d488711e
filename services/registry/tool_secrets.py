"""Which secrets a tool may use, decided when it is registered. Pure: no I/O.

- A signing secret posted as a literal (Vocode's ``signature_secret``, a
  Standard Webhooks ``whsec_...``) becomes an account secret of the tool's
  account: the tool keeps only its ``{{secrets.NAME}}`` reference, and the
  document kept as its source has the reference in place of the value.
- A tool posted with an account key may refer only to its account's
  secrets; one posted with the admin key is a platform tool, which may also
  use the platform's (``MIDCALL_SECRET_<NAME>``, known only to executors).
  A python tool's secrets are those its code reads (``python.secrets``).
"""

import hashlib
from dataclasses import dataclass, field
from typing import Any

from shared.contract.tools import Tool
from shared.process.http_api import ApiError
from shared.security.account_secrets import is_name, reference, referenced_name

# Room left for the tool's name in a derived secret name (64 at most, with "_" + 8 hex).
_NAME_ROOM = 55


@dataclass(frozen=True)
class Extracted:
    """Tools with their literal signing secrets replaced by references to account secrets."""

    tools: list[Tool]
    # NAME -> value, to store as the account's secrets.
    secrets: dict[str, str] = field(default_factory=dict)
    # value -> the reference that replaced it.
    replaced: dict[str, str] = field(default_factory=dict)

    def scrub(self, source: Any) -> Any:
        """``source`` (a posted document's part) with every extracted value replaced."""
        if not self.replaced:
            return source
        if isinstance(source, str):
            for value, ref in self.replaced.items():
                source = source.replace(value, ref)
            return source
        if isinstance(source, dict):
            return {key: self.scrub(item) for key, item in source.items()}
        if isinstance(source, list):
            return [self.scrub(item) for item in source]
        return source


def signing_secret_name(agent_id: str, tool_name: str, index: int) -> str:
    """A stable NAME for a tool's ``index``-th literal signing secret.

    Stable, so posting the tool again replaces the value; hashed with the agent,
    since two agents of one account may each have a tool of that name.
    """
    digest = hashlib.sha256(f"{agent_id}/{tool_name}/{index}".encode()).hexdigest()[:8]
    return f"SIGNING_{tool_name}"[:_NAME_ROOM] + f"_{digest}"


def own_signing_secrets(agent_id: str, tool: Tool) -> set[str]:
    """The account secrets made from ``tool``'s literal signing secrets, which it still
    uses: no other tool refers to them, so they go when it goes."""
    signing = tool.request.signing if tool.request is not None else None
    if signing is None:
        return set()
    derived = {signing_secret_name(agent_id, tool.name, i) for i in range(len(signing.secrets))}
    return derived & tool.http().secret_names()


def extract_signing_secrets(agent_id: str, tools: list[Tool]) -> Extracted:
    extracted = Extracted(tools=[])
    for tool in tools:
        signing = tool.request.signing if tool.request is not None else None
        if signing is None or all(referenced_name(s) for s in signing.secrets):
            extracted.tools.append(tool)
            continue
        kept = []
        for index, secret in enumerate(signing.secrets):
            if referenced_name(secret) is None:
                name = signing_secret_name(agent_id, tool.name, index)
                extracted.secrets[name] = secret
                extracted.replaced[secret] = reference(name)
                secret = reference(name)
            kept.append(secret)
        request = tool.http().model_copy(
            update={"signing": signing.model_copy(update={"secrets": kept})}
        )
        extracted.tools.append(tool.model_copy(update={"request": request}))
    return extracted


def stamp(tools: list[Tool], owner_account: str, platform: bool) -> list[Tool]:
    """The tools as the registry keeps them: whose they are, and who registered them."""
    return [
        tool.model_copy(update={"owner_account": owner_account, "platform": platform})
        for tool in tools
    ]


def require_known(tools: list[Tool], account_id: str, known: set[str]) -> None:
    """A 422 naming every secret a tool refers to that its account does not have."""
    missing = {
        f"tools[{index}]": sorted(tool.secret_names() - known) for index, tool in enumerate(tools)
    }
    missing = {where: names for where, names in missing.items() if names}
    if not missing:
        return
    names = sorted({name for names in missing.values() for name in names})
    invalid = [name for name in names if not is_name(name)]
    hint = (
        f"; a secret's name is letters, digits and '_' ({', '.join(invalid)} cannot be one)"
        if invalid
        else ""
    )
    raise ApiError(
        422,
        "unknown_secret",
        f"account '{account_id}' has no secret {', '.join(names)}: set it first with "
        f"PUT /v1/accounts/{account_id}/secrets/{{NAME}}{hint}",
        {"account_id": account_id, "missing": missing},
    )
