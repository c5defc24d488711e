"""The ``midcall`` command."""

import argparse
import asyncio
import json
import logging
import os
import sys
from pathlib import Path

from opentelemetry import trace

from services.catalog import SERVICES, keep_out
from shared.observability.tracing import build_provider
from shared.settings import Settings


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    settings = Settings()
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # httpx logs every request at INFO: a line per tool call.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    return int(args.command(args, settings) or 0)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="midcall", description=__doc__)
    commands = parser.add_subparsers(required=True, metavar="COMMAND")
    up = commands.add_parser(
        "up", help="start nats-server (unless MIDCALL_NATS_URL) and all services"
    )
    up.set_defaults(command=_up)
    run = commands.add_parser("run", help="run one service in this process")
    run.add_argument("service", choices=sorted(SERVICES))
    run.set_defaults(command=_run)
    demo = commands.add_parser("demo", help="everything, plus a salon API and a scripted call")
    demo.set_defaults(command=_demo)
    asyncapi = commands.add_parser("asyncapi", help="print the AsyncAPI document of the subjects")
    asyncapi.set_defaults(command=_asyncapi)
    nats_config = commands.add_parser(
        "nats-config",
        help="print nats-server's authorization block: a user per role, passwords from "
        "$MIDCALL_NATS_PASSWORD_<ROLE> (16 or more letters and digits, the first a letter; "
        "refused if set otherwise)",
    )
    nats_config.add_argument(
        "--runtime-accounts",
        metavar="FILE",
        help="include the runtime credentials' accounts from FILE (beside the config), "
        "which `midcall runtime-accounts FILE` keeps current",
    )
    nats_config.set_defaults(command=_nats_config)
    accounts = commands.add_parser(
        "runtime-accounts",
        help="beside a nats-server of your own: keep FILE, which it includes, to the "
        "runtime credentials, and have it reload",
    )
    accounts.add_argument("file", type=Path)
    accounts.set_defaults(command=_runtime_accounts)
    setup = commands.add_parser(
        "setup", help="create the streams and buckets (as the NATS setup user), then exit"
    )
    setup.set_defaults(command=_setup)
    tools = commands.add_parser("tools", help="manage tool definitions").add_subparsers(
        required=True, metavar="ACTION"
    )
    imports = tools.add_parser("import", help="register the tools of a document in a dialect")
    imports.add_argument("file", type=Path)
    imports.add_argument("--agent", required=True)
    imports.add_argument("--dialect", default="midcall")
    _rest_options(imports)
    imports.set_defaults(command=_import_tools)
    _failed_parsers(commands)
    creds = commands.add_parser(
        "runtime-creds",
        help="make runtime credentials of an account (its own NATS user), list or revoke them",
    )
    creds.add_argument("account")
    creds.add_argument("--list", action="store_true", help="list them (without passwords)")
    creds.add_argument("--revoke", metavar="CREDENTIAL_ID", help="revoke this one")
    _rest_options(creds)
    creds.set_defaults(command=_runtime_creds)
    return parser


def _failed_parsers(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    failed = commands.add_parser("failed", help="list failed calls, or show one")
    _selection(failed)
    failed.add_argument("--state", choices=["failed", "replaying", "replayed"])
    failed.set_defaults(command=_failed, action="list")
    shows = failed.add_subparsers(metavar="show")
    show = shows.add_parser("show", help="one failed call with its runs and HTTP attempts")
    show.add_argument("call_id", help="the call's id (or the failed call's number)")
    show.add_argument("--json", action="store_true", help="print JSON instead of tables")
    _rest_options(show)
    show.set_defaults(action="show")
    replay = commands.add_parser("replay", help="run failed calls again through the normal path")
    replay.add_argument("call_ids", nargs="*", metavar="CALL_ID")
    _selection(replay)
    replay.add_argument("--as-called", action="store_true", help="run the tool as first called")
    replay.add_argument("--dry-run", action="store_true", help="show the requests, send nothing")
    replay.add_argument(
        "--wait", type=float, default=90.0, help="seconds to wait for outcomes (default 90)"
    )
    replay.set_defaults(command=_failed, action="replay")


def _selection(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--agent")
    parser.add_argument("--account")
    parser.add_argument("--tool")
    parser.add_argument("--code", help="error code, e.g. http_error, timeout")
    parser.add_argument("--since", help="a time ago (1h, 30m, 2d) or an ISO 8601 time")
    parser.add_argument("--until", help="a time ago or an ISO 8601 time")
    parser.add_argument("--limit", type=int, default=1000, help="at most this many (1000)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    _rest_options(parser)


def _rest_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--registry", help="registry URL (default: from MIDCALL_* settings)")
    parser.add_argument(
        "--key",
        default=os.environ.get("MIDCALL_API_KEY"),
        help="an API key (default: $MIDCALL_API_KEY, else the admin key of the settings "
        "or of the data directory)",
    )


def _up(_: argparse.Namespace, settings: Settings) -> int:
    from services.supervisor import run_up

    return asyncio.run(run_up(settings))


def _run(args: argparse.Namespace, settings: Settings) -> int:
    keep_out(args.service, settings.nats_url)
    from shared.process.service import run_until_signal  # after keep_out: it loads FastStream

    trace.set_tracer_provider(
        build_provider(f"midcall-{args.service}", settings.trace_sample_ratio)
    )
    service = SERVICES[args.service](settings)
    asyncio.run(run_until_signal(service))
    provider = trace.get_tracer_provider()
    shutdown = getattr(provider, "shutdown", None)
    if shutdown is not None:
        shutdown()  # flushes spans still batched for export
    return 0


def _demo(_: argparse.Namespace, settings: Settings) -> int:
    from services.demo.main import run_demo

    return asyncio.run(run_demo(settings))


def _asyncapi(_: argparse.Namespace, __: Settings) -> int:
    from services.asyncapi import document

    print(json.dumps(document(), indent=2))
    return 0


def _failed(args: argparse.Namespace, settings: Settings) -> int:
    from services.failed_calls_cli import run

    return run(args, args.registry or _registry_url(settings), _key(args, settings))


def _registry_url(settings: Settings) -> str:
    return f"http://{settings.host}:{settings.registry_port}"


def _key(args: argparse.Namespace, settings: Settings) -> str:
    # Imported here: the REST key store brings FastAPI, which a service process without a
    # REST API would otherwise carry (about 6 MB each).
    from shared.security.api_keys import admin_key

    return str(args.key) if args.key else admin_key(settings)


def _runtime_creds(args: argparse.Namespace, settings: Settings) -> int:
    from services.runtime_creds_cli import runtime_creds

    registry = args.registry or _registry_url(settings)
    return runtime_creds(registry, _key(args, settings), args.account, args.list, args.revoke)


def _runtime_accounts(args: argparse.Namespace, settings: Settings) -> int:
    from services.runtime_accounts_cli import run

    return asyncio.run(run(settings, args.file))


def _nats_config(args: argparse.Namespace, __: Settings) -> int:
    from shared.security.nats_auth import (
        UnreadablePassword,
        check_env_passwords,
        render_authorization_from_env,
    )

    try:
        # Those already set here, as for the server: it would misread some shapes.
        check_env_passwords(os.environ)
    except UnreadablePassword as exc:
        print(exc, file=sys.stderr)
        return 2
    print(render_authorization_from_env(include=args.runtime_accounts), end="")
    return 0


def _setup(_: argparse.Namespace, settings: Settings) -> int:
    from shared.fabric.broker import create_streams

    asyncio.run(create_streams(settings))
    return 0


def _import_tools(args: argparse.Namespace, settings: Settings) -> int:
    from services.tool_import import import_tools

    registry = args.registry or _registry_url(settings)
    return import_tools(registry, _key(args, settings), args.file, args.agent, args.dialect)


if __name__ == "__main__":
    sys.exit(main())
