"""What billing tells of usage: totals and conversation summaries, made from records."""

from collections.abc import Sequence

from pydantic import BaseModel

from shared.contract.events import UsageRecord

# Units are priced to 6 decimals (shared.calls.metering); sums are rounded back to that.
UNITS_DECIMALS = 6
# The account an end from the shared runtime user is stored under: the account
# is not known, and that conversation id has ended in every account.
SHARED_END = ""


class Totals(BaseModel):
    """Sums over a set of calls; ``errors`` counts the calls whose status is ``error``.

    Every run is billed, so ``calls`` counts replays too; ``replays`` says how
    many of them were replays (attempt 2 and on).
    """

    calls: int = 0
    errors: int = 0
    replays: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    units: float = 0.0


class ConversationSummary(BaseModel):
    """What billing knows of one conversation: its calls in time order, and whether it ended."""

    conversation_id: str
    # Whose conversation; None: every account's calls of that id (the admin's view).
    account_id: str | None = None
    calls: list[UsageRecord]
    totals: Totals
    ended: bool


def totals_of(records: Sequence[UsageRecord]) -> Totals:
    """The same sums ``UsageStore.account_totals`` makes in SQL, over records already loaded."""
    return Totals(
        calls=len(records),
        errors=sum(record.status == "error" for record in records),
        replays=sum(record.attempt > 1 for record in records),
        input_tokens=sum(record.input_tokens for record in records),
        output_tokens=sum(record.output_tokens for record in records),
        units=round(sum(record.units for record in records), UNITS_DECIMALS),
    )


def summary_of(
    conversation_id: str,
    account_id: str | None,
    calls: list[UsageRecord],
    ended_in: set[str],
) -> ConversationSummary | None:
    """The summary of ``calls``, given the accounts (``SHARED_END`` among them) whose end of
    that conversation id was heard; None when there is nothing to show.

    One account's conversation is known by its calls or its own end: a shared end
    alone says nothing of whether that account had the conversation. With no
    account (every account's calls of that id), it has ended once each of their
    accounts' conversations has.
    """
    if account_id is None:
        known, accounts = bool(calls or ended_in), {call.account_id for call in calls}
    else:
        known, accounts = bool(calls) or account_id in ended_in, {account_id}
    if not known:
        return None
    return ConversationSummary(
        conversation_id=conversation_id,
        account_id=account_id,
        calls=calls,
        totals=totals_of(calls),
        ended=SHARED_END in ended_in or accounts <= ended_in,
    )
