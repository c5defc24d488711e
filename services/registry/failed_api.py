"""Failed calls over REST: list them, show one with its runs, replay them."""

import asyncio
from collections.abc import Callable
from typing import Annotated, Any, ParamSpec, TypeVar

from fastapi import APIRouter, Path, Query

from services.registry.failures import (
    FailedCall,
    FailedCallDetail,
    FailureStore,
    Filters,
    State,
    StoreUnavailable,
)
from services.registry.replays import ReplayBody, Replayer, ReplayReport
from shared.contract.events import ID_PATTERN
from shared.fabric.outages import TRANSIENT
from shared.process.http_api import ApiError, RowId, UtcDatetime
from shared.security.api_keys import AUTHENTICATED, Caller, Principal

P = ParamSpec("P")
# No account has this id (ids are subject tokens): a filter that matches nothing.
_NOBODY = "*"
T = TypeVar("T")
MAX_PAGE = 500


def build_router(store: FailureStore, replayer: Replayer) -> APIRouter:
    router = APIRouter(prefix="/v1/failed", dependencies=AUTHENTICATED)

    @router.get("")
    async def list_failed(
        agent_id: Annotated[str | None, Query(pattern=ID_PATTERN)] = None,
        account_id: Annotated[str | None, Query(pattern=ID_PATTERN)] = None,
        tool: Annotated[str | None, Query(max_length=128)] = None,
        code: Annotated[str | None, Query(max_length=64)] = None,
        call_id: Annotated[str | None, Query(max_length=256)] = None,
        state: State | None = None,
        since: Annotated[UtcDatetime | None, Query(description="inclusive, RFC 3339")] = None,
        until: Annotated[UtcDatetime | None, Query(description="exclusive, RFC 3339")] = None,
        ids: Annotated[list[RowId] | None, Query(alias="id", max_length=MAX_PAGE)] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
        before_id: Annotated[RowId | None, Query(description="the next page, newest first")] = None,
        *,
        caller: Caller,
    ) -> dict[str, Any]:
        """Failed calls and dead letters, newest first, by the latest run's time."""
        filters = Filters(
            ids=ids,
            agent_id=agent_id,
            account_id=own_account(caller, account_id),
            tool=tool,
            code=code,
            call_id=call_id,
            state=state,
            since=since,
            until=until,
        )
        page: list[FailedCall] = await _stored(store.find, filters, limit, before_id)
        more = len(page) == limit
        return {"failed": page, "next_before_id": page[-1].id if more else None}

    @router.get("/{failure_id}")
    async def show_failed(
        failure_id: Annotated[int, Path(ge=1, le=2**63 - 1)], caller: Caller
    ) -> FailedCallDetail:
        """One failed call with the call, the tool as used and every run's HTTP attempts."""
        found = await _stored(store.get, failure_id)
        if found is None or not caller.may_see(found.account_id):
            raise ApiError(404, "not_found", f"there is no failed call {failure_id}")
        return found

    @router.post("/replay")
    async def replay(body: ReplayBody, caller: Caller) -> ReplayReport:
        """Run failed calls again through the normal path, or show what would be sent."""
        body.account_id = own_account(caller, body.account_id)
        try:
            return await replayer.replay(body)
        except StoreUnavailable as exc:
            raise _unavailable(exc) from exc
        except TRANSIENT as exc:  # NATS stayed away longer than a publish waits
            raise _unavailable(exc) from exc

    return router


def own_account(caller: Principal, asked: str | None) -> str | None:
    """The account filter an account key is held to: its own, whatever it asked for
    (another account's id then finds nothing, as if it had no failed calls)."""
    if caller.is_admin:
        return asked
    return caller.account_id if asked in (None, caller.account_id) else _NOBODY


async def _stored(read: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    try:
        return await asyncio.to_thread(read, *args, **kwargs)
    except StoreUnavailable as exc:
        raise _unavailable(exc) from exc


def _unavailable(exc: Exception) -> ApiError:
    return ApiError(503, "unavailable", f"failed calls are unavailable just now; try again ({exc})")
