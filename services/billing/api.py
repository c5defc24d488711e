"""Billing's REST API: usage per account over a time range, and per conversation."""

import asyncio
from collections.abc import Callable
from typing import Annotated, ParamSpec, TypeVar

from fastapi import APIRouter, Depends, FastAPI, Query, Request

from services.billing.store import StoreUnavailable, UsageStore
from services.billing.summaries import ConversationSummary, Totals
from shared.process.http_api import ApiError, AwareUtcDatetime
from shared.security.api_keys import AUTHENTICATED, Caller, KeyRing, rest_app

P = ParamSpec("P")
T = TypeVar("T")

router = APIRouter(dependencies=AUTHENTICATED)


class AccountUsage(Totals):
    """An account's ``Totals`` (``replays`` included), named by the account."""

    account_id: str


def _store(request: Request) -> UsageStore:
    store: UsageStore = request.app.state.store
    return store


Store = Annotated[UsageStore, Depends(_store)]


async def _query(read: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    # The store blocks; a worker thread keeps the event loop (and NATS) responsive.
    try:
        return await asyncio.to_thread(read, *args, **kwargs)
    except StoreUnavailable as exc:
        raise ApiError(503, "unavailable", "usage storage is unavailable; try again") from exc


async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/v1/usage")
async def account_usage(
    store: Store,
    caller: Caller,
    account_id: Annotated[str, Query(min_length=1)],
    since: Annotated[AwareUtcDatetime | None, Query(description="inclusive, RFC 3339")] = None,
    until: Annotated[AwareUtcDatetime | None, Query(description="exclusive, RFC 3339")] = None,
) -> AccountUsage:
    """An account's calls, errors, tokens and units with ``since <= at < until``.

    Every run of a call is billed: ``calls`` counts replays too, ``replays`` how many.
    """
    if not caller.may_see(account_id):
        raise ApiError(404, "not_found", f"billing has no usage for account '{account_id}'")
    totals = await _query(store.account_totals, account_id, since, until)
    return AccountUsage(account_id=account_id, **totals.model_dump())


@router.get("/v1/usage/conversations/{conversation_id}")
async def conversation_usage(
    conversation_id: str,
    store: Store,
    caller: Caller,
    account_id: Annotated[
        str | None,
        Query(
            min_length=1,
            description="whose conversation (admin key); without it, every account's calls",
        ),
    ] = None,
) -> ConversationSummary:
    """An account's conversation: its calls in time order, their totals, and whether it ended.

    An account key sees its own account's conversation; the admin key the one of
    ``account_id``, or without it every account's calls of that conversation id.
    """
    whose = account_id or caller.account_id
    summary = None
    # Another account's conversation is as unknown to an account key as one never seen.
    if caller.may_see(whose):
        summary = await _query(store.conversation, conversation_id, whose)
    if summary is None:
        raise ApiError(
            404,
            "not_found",
            f"billing has no usage and no end for conversation '{conversation_id}'",
        )
    return summary


def build_app(store: UsageStore, keyring: KeyRing) -> FastAPI:
    app = rest_app("Midcall billing", keyring)
    app.state.store = store
    app.include_router(router)
    app.add_api_route("/healthz", healthz, methods=["GET"])
    return app
