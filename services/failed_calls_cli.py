"""``midcall failed`` and ``midcall replay``: ops' view of failed calls, over the registry's REST.

``--json`` prints nothing but JSON on stdout, so scripts can pipe it;
progress bars are drawn on stderr, and only on a terminal.
"""

import json
import re
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from shared.security.api_keys import bearer

# Ids per request: well under the REST limits (500 a page, 10,000 a replay).
CHUNK = 200
POLL_S = 0.5
RELATIVE = re.compile(r"^(\d+)\s*([smhd])$")
UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


class CliError(Exception):
    """Something to tell the operator, then exit 1."""


def parse_time(text: str, now: datetime | None = None) -> datetime:
    """``1h``, ``30m``, ``2d``, ``90s`` ago, or an ISO 8601 time (UTC when it names no zone)."""
    match = RELATIVE.match(text.strip())
    if match:
        amount, unit = int(match[1]), UNITS[match[2]]
        return (now or datetime.now(UTC)) - timedelta(**{unit: amount})
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise CliError(
            f"'{text}' is neither a time ago (1h, 30m, 2d) nor an ISO 8601 time"
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


class Registry:
    """The few REST calls the commands make, with errors in words."""

    def __init__(self, url: str, key: str) -> None:
        self._http = httpx.Client(base_url=url, timeout=120.0, headers=bearer(key))

    def get(self, path: str, params: Any = None) -> Any:
        return self._answer(lambda: self._http.get(path, params=params))

    def post(self, path: str, body: dict[str, Any]) -> Any:
        return self._answer(lambda: self._http.post(path, json=body))

    def _answer(self, send: Any) -> Any:
        try:
            response: httpx.Response = send()
        except httpx.HTTPError as exc:
            raise CliError(f"the registry at {self._http.base_url} did not answer: {exc}") from exc
        if response.is_error:
            try:
                error = response.json()["error"]
                raise CliError(f"{error['code']}: {error['message']}")
            except (ValueError, KeyError, TypeError):
                raise CliError(f"HTTP {response.status_code}: {response.text[:500]}") from None
        return response.json()

    def failed(self, filters: dict[str, Any], limit: int) -> list[dict[str, Any]]:
        """Up to ``limit`` failed calls matching ``filters``, newest first, across pages."""
        found: list[dict[str, Any]] = []
        before: int | None = None
        while len(found) < limit:
            page_size = min(500, limit - len(found))
            params = {**filters, "limit": page_size}
            if before is not None:
                params["before_id"] = before
            page = self.get("/v1/failed", {k: v for k, v in params.items() if v is not None})
            found += page["failed"]
            before = page["next_before_id"]
            if before is None:
                break
        return found


def filters_of(args: Any) -> dict[str, Any]:
    return {
        "agent_id": args.agent,
        "account_id": args.account,
        "tool": args.tool,
        "code": args.code,
        "since": parse_time(args.since).isoformat() if args.since else None,
        "until": parse_time(args.until).isoformat() if args.until else None,
    }


def run(args: Any, registry_url: str, key: str) -> int:
    """Run the ``failed`` or ``replay`` command ``args`` names; 1 on an error to report."""
    out, err = Console(), Console(stderr=True)
    registry = Registry(registry_url, key)
    try:
        if args.action == "replay":
            return replay(registry, args, out, err)
        if args.action == "show":
            return show_failed(registry, args, out)
        return list_failed(registry, args, out)
    except CliError as error:
        err.print(f"midcall: {error}", markup=False)
        return 1


def list_failed(registry: Registry, args: Any, out: Console) -> int:
    filters = {**filters_of(args), "state": args.state}
    rows = registry.failed(filters, args.limit)
    if args.json:
        out.print_json(json.dumps(rows))
        return 0
    if not rows:
        out.print("No failed calls match.")
        return 0
    table = Table(title=f"{len(rows)} failed call{'s' if len(rows) > 1 else ''}, newest first")
    for column in ("id", "last failed", "state", "code", "tool", "agent", "call", "message"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(
            str(row["id"]),
            _short_time(row["last_at"]),
            row["state"],
            row["code"] + (f" {row['http_status']}" if row["http_status"] else ""),
            row["tool"] or "",
            row["agent_id"] or "",
            row["call_id"] or "",
            _clip(row["message"], 80),
        )
    out.print(table)
    return 0


def show_failed(registry: Registry, args: Any, out: Console) -> int:
    matches = registry.failed({"call_id": args.call_id}, 100)
    if not matches and args.call_id.isdigit():
        matches = registry.failed({"id": int(args.call_id)}, 1)
    if not matches:
        raise CliError(f"no failed call has the id '{args.call_id}'")
    details = [registry.get(f"/v1/failed/{row['id']}") for row in matches]
    if args.json:
        out.print_json(json.dumps(details))
        return 0
    for detail in details:
        _print_detail(detail, out)
    return 0


def _print_detail(detail: dict[str, Any], out: Console) -> None:
    out.rule(f"failed call {detail['id']}: {detail['call_id'] or detail['kind']}")
    facts = Table.grid(padding=(0, 2))
    for name in ("state", "code", "message", "tool", "agent_id", "account_id", "conversation_id"):
        facts.add_row(name, str(detail.get(name) or ""))
    facts.add_row("trace_id", detail.get("trace_id") or "")
    facts.add_row("first failed", _short_time(detail["first_failed_at"]))
    facts.add_row("replays", str(detail["replays"]))
    out.print(facts)
    if detail.get("call"):
        out.print("arguments:", json.dumps(detail["call"]["arguments"], ensure_ascii=False))
    tool = detail.get("tool_definition")
    if tool:
        out.print(f"tool as called: {tool['request']['method']} {tool['request']['url']}")
    if detail.get("dead_letter"):
        letter = detail["dead_letter"]
        out.print(f"dead letter from {letter['stage']} on {letter['subject']}: {letter['reason']}")
    if detail["runs"]:
        out.print(_runs_table(detail["runs"]))


def _runs_table(runs: list[dict[str, Any]]) -> Table:
    table = Table(title="runs and their HTTP attempts")
    for column in ("run", "at", "outcome", "took ms", "HTTP attempts"):
        table.add_column(column, overflow="fold")
    for run in runs:
        outcome = run["status"] if run["error"] is None else run["error"]["code"]
        attempts = ", ".join(
            f"#{a['number']} {a['http_status'] or a['error']} {a['duration_ms']:g} ms"
            for a in run["http_attempts"]
        )
        label = f"{run['attempt']}" + (" (replay)" if run["replay"] else "")
        table.add_row(
            label, _short_time(run["at"]), outcome, f"{run['duration_ms']:g}", attempts or "none"
        )
    return table


def replay(registry: Registry, args: Any, out: Console, err: Console) -> int:
    ids = _selected_ids(registry, args)
    if not ids:
        if not args.json:
            out.print("Nothing to replay: no failed call matches.")
        return 0
    items = _send_replays(registry, ids, args, err)
    if args.dry_run:
        return _print_plan(items, args, out)
    outcomes = _wait_for(registry, [i for i in items if i["status"] == "queued"], args, err)
    return _print_summary(items, outcomes, args, out)


def _selected_ids(registry: Registry, args: Any) -> list[int]:
    if args.call_ids:
        ids: list[int] = []
        for call_id in args.call_ids:
            matches = registry.failed({"call_id": call_id}, 100)
            if not matches:
                raise CliError(f"no failed call has the id '{call_id}'")
            ids += [row["id"] for row in matches]
        return ids
    filters = filters_of(args)
    if all(value is None for value in filters.values()):
        raise CliError("name call ids, or select calls with --tool, --code, --since, --agent")
    # Oldest first: a replay runs calls in the order they first failed.
    rows = registry.failed({**filters, "state": "failed"}, args.limit)
    return [row["id"] for row in reversed(rows)]


def _send_replays(registry: Registry, ids: list[int], args: Any, err: Console) -> list[Any]:
    items: list[Any] = []
    verb = "planning" if args.dry_run else "queueing"
    with _progress(err) as progress:
        task = progress.add_task(verb, total=len(ids))
        for chunk in _chunks(ids):
            body = {"ids": chunk, "as_called": args.as_called, "dry_run": args.dry_run}
            items += registry.post("/v1/failed/replay", body)["items"]
            progress.advance(task, len(chunk))
    return items


def _wait_for(
    registry: Registry, queued: list[dict[str, Any]], args: Any, err: Console
) -> dict[int, dict[str, Any]]:
    """Each queued replay's row once its run has ended, until ``--wait`` runs out."""
    waiting = {item["id"]: item["attempt"] for item in queued}
    ended: dict[int, dict[str, Any]] = {}
    deadline = time.monotonic() + args.wait
    with _progress(err) as progress:
        task = progress.add_task("running", total=len(waiting))
        while waiting and time.monotonic() < deadline:
            for chunk in _chunks(list(waiting)):
                for row in registry.failed({"id": chunk}, len(chunk)):
                    if row["last_attempt"] >= waiting.get(row["id"], 1 << 30):
                        ended[row["id"]] = row
                        del waiting[row["id"]]
                        progress.advance(task)
            if waiting:
                time.sleep(POLL_S)
    return ended


def _print_plan(items: list[dict[str, Any]], args: Any, out: Console) -> int:
    if args.json:
        out.print_json(json.dumps({"dry_run": True, "items": items}))
        return 0
    for item in items:
        head = f"#{item['id']} {item['call_id'] or item['kind']}"
        if item["status"] == "skipped":
            out.print(f"{head}: would not run: {item['reason']}")
        elif item["request"] is not None:
            request = item["request"]
            out.print(f"{head}: {request['method']} {request['url']}", markup=False)
            for name, value in request["headers"].items():
                out.print(f"    {name}: {value}", markup=False, highlight=False)
            if request["body"] is not None:
                out.print(f"    {request['body']}", markup=False, highlight=False)
        else:
            out.print(f"{head}: published again on {item['subject']}", markup=False)
    return 0


def _print_summary(
    items: list[dict[str, Any]], outcomes: dict[int, dict[str, Any]], args: Any, out: Console
) -> int:
    queued = [item for item in items if item["status"] == "queued"]
    succeeded = [i for i in queued if outcomes.get(i["id"], {}).get("state") == "replayed"]
    failed = Counter(
        outcomes[i["id"]]["code"]
        for i in queued
        if i["id"] in outcomes and outcomes[i["id"]]["state"] != "replayed"
    )
    unfinished = [i for i in queued if i["id"] not in outcomes]
    skipped = [item for item in items if item["status"] == "skipped"]
    if args.json:
        report = {
            "queued": len(queued),
            "succeeded": len(succeeded),
            "failed": dict(failed),
            "unfinished": [i["id"] for i in unfinished],
            "skipped": [{"id": i["id"], "reason": i["reason"]} for i in skipped],
            "items": [{**i, "outcome": outcomes.get(i["id"])} for i in items],
        }
        out.print_json(json.dumps(report))
    else:
        out.print(f"Replayed {len(queued)}: {len(succeeded)} succeeded", end="")
        out.print("".join(f", {n} failed again ({code})" for code, n in failed.items()), end="")
        out.print(f", {len(unfinished)} still running" if unfinished else "", end="")
        out.print(f"; {len(skipped)} skipped." if skipped else ".")
        for item in skipped:
            out.print(f"  #{item['id']} {item['call_id']}: {item['reason']}", markup=False)
    clean = len(succeeded) == len(queued) and not skipped
    return 0 if clean else 1


def _progress(err: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal,
    )


def _chunks(ids: list[int]) -> Iterator[list[int]]:
    for start in range(0, len(ids), CHUNK):
        yield ids[start : start + CHUNK]


def _short_time(text: str) -> str:
    return datetime.fromisoformat(text).strftime("%Y-%m-%d %H:%M:%S")


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"
