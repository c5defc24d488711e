"""The ``midcall`` command."""

import argparse
import asyncio
import json
import logging
import sys
from pathlib import Path

from opentelemetry import trace

from services.catalog import SERVICES
from shared.service import run_until_signal
from shared.settings import Settings
from shared.tracing import build_provider


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
    tools = commands.add_parser("tools", help="manage tool definitions").add_subparsers(
        required=True, metavar="ACTION"
    )
    imports = tools.add_parser("import", help="register the tools of a document in a dialect")
    imports.add_argument("file", type=Path)
    imports.add_argument("--agent", required=True)
    imports.add_argument("--dialect", default="midcall")
    imports.add_argument("--registry", help="registry URL (default: from MIDCALL_* settings)")
    imports.set_defaults(command=_import_tools)
    return parser


def _up(_: argparse.Namespace, settings: Settings) -> int:
    from services.supervisor import run_up

    return asyncio.run(run_up(settings))


def _run(args: argparse.Namespace, settings: Settings) -> int:
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


def _import_tools(args: argparse.Namespace, settings: Settings) -> int:
    from services.tool_import import import_tools

    registry = args.registry or f"http://{settings.host}:{settings.registry_port}"
    return import_tools(registry, args.file, args.agent, args.dialect)


if __name__ == "__main__":
    sys.exit(main())
