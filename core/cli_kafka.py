"""``fleet kafka up|down|status``: the local single-node Kafka broker (see core/localkafka.py)."""

from __future__ import annotations

import json
import subprocess
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from core.config import get_settings
from core.localkafka import ExternalKafkaConfigured, KafkaSetupError, LocalKafka

kafka_app = typer.Typer(
    help=(
        "Run a local single-node Apache Kafka broker (KRaft) on 127.0.0.1 for development. "
        "Jars come from Maven Central via mvn (cached after the first run); needs Java 17+. "
        "Set KAFKA_BOOTSTRAP_SERVERS to use an existing cluster instead."
    ),
    no_args_is_help=True,
)

console = Console()
err_console = Console(stderr=True)

_ERRORS = (KafkaSetupError, OSError, subprocess.SubprocessError)


def _fail(exc: BaseException) -> NoReturn:
    message = Text("error: ", style="bold red")
    message.append(str(exc))  # plain text: log tails contain [brackets] that aren't markup
    err_console.print(message)
    raise typer.Exit(code=1)


def _local() -> LocalKafka:
    return LocalKafka(get_settings())


@kafka_app.command()
def up(
    timeout: Annotated[
        float, typer.Option(help="Seconds to wait for the broker to answer.")
    ] = 60.0,
) -> None:
    """Start the local broker (fetching Kafka on first use); no-op if it already runs."""
    settings = get_settings()
    local = LocalKafka(settings)
    try:
        with console.status("Starting Kafka...", spinner="dots") as spinner:

            def progress(message: str) -> None:
                spinner.update(Text(message + "..."))
                console.print(Text(f"- {message}", style="dim"))

            bootstrap = local.up(timeout_s=timeout, progress=progress)
    except ExternalKafkaConfigured:
        console.print(
            Text(
                f"An external Kafka cluster is configured "
                f"(KAFKA_BOOTSTRAP_SERVERS={settings.kafka_bootstrap_servers}); "
                "not starting a local broker.",
                style="yellow",
            )
        )
        return
    except _ERRORS as exc:
        _fail(exc)
    pid = local.status()["pid"]
    line = Text("Kafka ", style="green")
    line.append(local.version, style="bold")
    line.append(" is up at ", style="green")
    line.append(bootstrap, style="bold")
    line.append(f"  (pid {pid}, log {local.log_file})", style="dim")
    console.print(line)


@kafka_app.command()
def down(
    timeout: Annotated[
        float, typer.Option(help="Seconds to wait for a clean shutdown before SIGKILL.")
    ] = 30.0,
) -> None:
    """Stop the local broker (its data is kept)."""
    local = _local()
    try:
        with console.status("Stopping Kafka...", spinner="dots"):
            stopped = local.down(timeout_s=timeout)
    except _ERRORS as exc:
        _fail(exc)
    if stopped:
        console.print(Text(f"Kafka stopped (data kept in {local.data_dir}).", style="green"))
    else:
        console.print(Text(f"No local Kafka broker was running ({local.state_dir}).", style="dim"))


@kafka_app.command()
def status(
    as_json: Annotated[bool, typer.Option("--json", help="Print the status as JSON.")] = False,
) -> None:
    """Show whether the local broker runs and answers."""
    settings = get_settings()
    local = LocalKafka(settings)
    try:
        info = local.status()
    except _ERRORS as exc:
        _fail(exc)
    if as_json:
        typer.echo(json.dumps(info, indent=2))
        return
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    if info["running"]:
        state = Text("running", style="green")
        state.append(
            ", answering" if info["answering"] else ", NOT answering",
            style="green" if info["answering"] else "bold red",
        )
    else:
        state = Text("stopped", style="yellow")
    table.add_row("local broker", state)
    table.add_row("pid", str(info["pid"] or "-"))
    table.add_row("bootstrap", info["bootstrap"])
    table.add_row("version", info["version"])
    table.add_row("state dir", info["state_dir"])
    table.add_row("log", info["log"])
    if not settings.kafka_is_local:
        table.add_row(
            "external", Text(f"{settings.kafka_bootstrap_servers} (KAFKA_BOOTSTRAP_SERVERS)")
        )
    console.print(table)
