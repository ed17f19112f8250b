"""``submit``, ``watch`` and ``logs`` with the standard library only: ``python -m tsretrain.cluster`` works in a
light install (``pip install --no-deps tsretrain``, ``make submit``) without the torch stack; the full CLI's
commands of the same names call these functions."""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Callable

from tsretrain.cluster.argo import ArgoClient, ArgoError

Echo = Callable[[str], None]
CLIENT_ERROR = 2  # the request could not be made (address, name, permission): never the run's own outcome (1)


def _failed(what: str, exc: ArgoError) -> int:
    print(f"{what} failed: {exc}", file=sys.stderr)
    return CLIENT_ERROR


def parse_parameters(pairs: list[str], text: str = "") -> dict[str, str]:
    """``KEY=VALUE`` items, plus those of ``text`` split like a shell does (quotes keep JSON with spaces whole:
    ``folds='["0", "1"]'``)."""
    values: dict[str, str] = {}
    for pair in [*pairs, *shlex.split(text)]:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"parameter {pair!r} is not KEY=VALUE")
        values[key] = value
    return values


def submit(
    parameters: dict[str, str],
    template: str = "tsretrain",
    server: str | None = None,
    namespace: str | None = None,
    echo: Echo = print,
) -> int:
    """Submit a run from the installed WorkflowTemplate and print its UI link; the exit code."""
    try:
        client = ArgoClient.from_env(server, namespace)
        name = client.submit(template, parameters)["metadata"]["name"]
    except ArgoError as exc:
        return _failed("submit", exc)
    echo(f"submitted {name}")
    echo(f"watch it in the Argo UI: {client.ui_link(name)}")
    return 0


def watch(
    name: str, server: str | None = None, namespace: str | None = None, every: float = 10.0, echo: Echo = print
) -> int:
    """Follow a run until it ends; 0 only when it succeeded."""
    try:
        return 0 if ArgoClient.from_env(server, namespace).watch(name, every, echo) == "Succeeded" else 1
    except ArgoError as exc:
        return _failed("watch", exc)


def logs(
    name: str, server: str | None = None, namespace: str | None = None, follow: bool = True, echo: Echo = print
) -> int:
    """Stream the log lines of a run's pods."""
    try:
        for line in ArgoClient.from_env(server, namespace).logs(name, follow):
            echo(line)
    except ArgoError as exc:
        return _failed("logs", exc)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tsretrain.cluster", description=__doc__)
    parser.add_argument("--server", help="Argo server URL (default $ARGO_SERVER)")
    parser.add_argument("--namespace", help="namespace (default $ARGO_NAMESPACE or argo)")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("submit", help="submit a run and print its UI link")
    run.add_argument("-p", "--parameter", action="append", default=[], help="KEY=VALUE (repeatable)")
    run.add_argument("--parameters", default="", help="KEY=VALUE items in one shell-quoted string")
    run.add_argument("--template", default="tsretrain", help="installed WorkflowTemplate")
    follow = commands.add_parser("watch", help="follow a run until it ends")
    follow.add_argument("name")
    follow.add_argument("--every", type=float, default=10.0, help="seconds between polls")
    stream = commands.add_parser("logs", help="stream a run's pod logs")
    stream.add_argument("name")
    stream.add_argument("--no-follow", action="store_true", help="print what is there and stop")
    args = parser.parse_args(argv)
    if args.command == "submit":
        try:
            parameters = parse_parameters(args.parameter, args.parameters)
        except ValueError as exc:
            print(f"submit failed: {exc}", file=sys.stderr)
            return CLIENT_ERROR
        return submit(parameters, args.template, args.server, args.namespace)
    if args.command == "watch":
        return watch(args.name, args.server, args.namespace, args.every)
    return logs(args.name, args.server, args.namespace, not args.no_follow)
