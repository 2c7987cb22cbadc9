"""The `lab` command line, thin over lab.lifecycle and lab.bench; every error leaves here as one line and an exit code."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any, Callable

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

import lab.bench
import lab.failover
from lab import deploy as deploys
from lab import demos, lifecycle, offline as offline_module, workshop
from lab.errors import ChecksFailed, LabError, UsageError, exit_code_for, one_line
from lab.recipes import RecipeResult
from lab.services import DOWN
from lab.bench.html import comparison_verdict
from lab.bench.report import comparison_table, matrix_table, tls_cost_lines
from lab.topology import TIERS, Overrides
from lab.verify import SkippedCheck


class ReaderGone:
    """sys.stdout or sys.stderr (looked up at each write, so tests may swap them) that, once the reader of its pipe has
    gone (`lab up | head -1`), sends what follows to /dev/null instead of raising BrokenPipeError in whichever thread
    writes next: that left `lab up` hung, holding the lab's lock. The command carries on and finishes its work."""

    def __init__(self, name: str) -> None:
        self._name = name

    @property
    def _stream(self) -> Any:
        return getattr(sys, self._name)

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._discard()
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._discard()

    def _discard(self) -> None:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, self._stream.fileno())
        os.close(devnull)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


# Wide enough for the bench tables when output goes to a file or CI log (rich assumes 80 columns there).
console = Console(file=ReaderGone("stdout"), highlight=False, soft_wrap=True,
                  width=None if sys.stdout.isatty() else 150)
errors = Console(file=ReaderGone("stderr"), highlight=False, soft_wrap=True)
STATUS_STYLE = {"changed": "yellow", "ok": "green", "failed": "bold red", "skipped": "magenta"}


def say(message: str) -> None:
    console.print(f"[cyan]lab[/]: {message}")


def show_result(result: RecipeResult, verbose: bool) -> None:
    if result.status == "ok" and not verbose:
        return
    detail = "; ".join(result.changes) if result.changes else result.error
    style = STATUS_STYLE[result.status]
    console.print(
        f"  [{style}]{result.status:<7}[/] {result.host:<6} step {result.step} {result.recipe.split('.', 1)[1]:<22} "
        f"[dim]{result.seconds:5.1f}s[/] {detail}"
    )


def project() -> lifecycle.Project:
    return lifecycle.Project.here()


def web_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--web", type=int, default=None, metavar="N", help="Number of web servers (web1..webN).")(func)


def step_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--step", type=int, default=None, metavar="K",
                        help=f"Only the workshop's steps up to K ({lifecycle.step_names()}).")(func)


def _note_debug(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    """--debug wherever it is given: main() reads the choice from the context object it passed in."""
    if value:
        ctx.ensure_object(dict)["debug"] = True


def debug_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--debug", is_flag=True, expose_value=False, callback=_note_debug,
                        help="Show tracebacks instead of one-line errors.")(func)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, envvar="LAB_DEBUG", expose_value=False, callback=_note_debug,
              help="Show tracebacks instead of one-line errors (also LAB_DEBUG=1; every verb takes it too).")
@click.version_option(package_name="lab", prog_name="lab")
def cli() -> None:
    """Build the Django Deployment Workshop's production stack on this machine, provision it, prove it, load-test it."""


@cli.command()
@web_option
@click.option("--provider", default=None, metavar="NAME", help="local (systemd-nspawn, default on Linux) or vagrant.")
@click.option("--app-server", default=None, metavar="NAME",
              help="What serves the site on the web hosts: gunicorn (default) or mod_wsgi (Apache); switches in place.")
@click.option("--preset", default=None, metavar="NAME",
              help="Tier counts to start from: minimal (default), workshop, tuned or full.")
@click.option("--pooler", default=None, metavar="NAME",
              help="Between the site and PostgreSQL: none or pgbouncer (default per preset; [db] pooler).")
@click.option("--cache", "cache_hosts", type=int, default=None, metavar="N", help="memcached hosts cache1..cacheN (0: none).")
@click.option("--db", "db_hosts", type=int, default=None, metavar="N", help="Database hosts: 1, or 2 (db2 a hot standby).")
@click.option("--lb", "lb_hosts", type=int, default=None, metavar="N",
              help="Balancers: 1, or 2 (a pair holding one floating address, keepalived).")
@click.option("--q", "queue_hosts", type=int, default=None, metavar="N",
              help="Queue hosts q1..qN: Redis on q1, a Celery worker on each (0: none).")
@click.option("--api", "api_hosts", type=int, default=None, metavar="N",
              help="API hosts api1..apiN: the site's JSON API behind the balancer's /api/ (0: the web hosts serve it).")
@click.option("--forget", is_flag=True,
              help="Drop the choices remembered from earlier flags: lab.toml and LAB_* decide again.")
@click.option("--offline", is_flag=True,
              help="Fetch nothing: everything from the machine's caches (`lab cache import`), or refused at once.")
@step_option
@click.option("-v", "--verbose", is_flag=True, help="List unchanged recipes too.")
@debug_option
def up(web: int | None, provider: str | None, app_server: str | None, preset: str | None, pooler: str | None,
       cache_hosts: int | None, db_hosts: int | None, lb_hosts: int | None, queue_hosts: int | None,
       api_hosts: int | None, forget: bool, offline: bool,
       step: int | None, verbose: bool) -> None:
    """Create or start the lab's hosts and converge every recipe (safe to run again).

    Flags are remembered: after `lab up --web=2`, a plain `lab up` keeps web1 and web2 (and says so) until another
    flag changes it or `--forget` hands the choice back to lab.toml and LAB_*.
    """
    counts = {tier: n for tier, n in (("cache", cache_hosts), ("db", db_hosts), ("lb", lb_hosts), ("q", queue_hosts),
                                      ("api", api_hosts)) if n is not None}
    overrides = Overrides(web=web, provider=provider, app_server=app_server, preset=preset, pooler=pooler, counts=counts)
    report = lifecycle.up(project(), overrides, say, functools.partial(show_result, verbose=verbose), max_step=step,
                          forget=forget, on_converged=workshop.step_completed, offline=offline)
    say(report.summary())
    if project().labdir.exists():
        say(project().labdir.topology().describe_data_tiers())


def _services_cell(services: dict[str, str]) -> str:
    colours = {"up": "green", "down": "red"}
    return ", ".join(f"{unit} [{colours.get(state, 'yellow')}]{state}[/]" for unit, state in services.items())


@cli.command()
@click.option("--format", "output", type=click.Choice(["table", "json"]), default="table", help="Output format.")
@debug_option
def status(output: str) -> None:
    """Show each host: tier, IP, state and whether its main services are up; then the site's URL."""
    here = project()
    rows = lifecycle.status(here)
    if output == "json":
        click.echo(json.dumps([row.__dict__ for row in rows], indent=2))
        return
    table = Table("host", "tier", "ip", "state", "services")
    for row in rows:
        table.add_row(row.name, row.tier, row.ip, f"[{'green' if row.state == 'running' else 'red'}]{row.state}[/]",
                      _services_cell(row.services))
    console.print(table)
    down = [row.name for row in rows if row.state != "running"]
    if down:
        say(f"not running: {', '.join(down)}; `lab up` starts them")
    not_serving = [row.name for row in rows if row.state != "running" or DOWN in row.services.values()]
    say(here.labdir.topology().describe_data_tiers(not_serving))
    if here.labdir.topology().floating_ip:
        say(lifecycle.describe_holders(here.labdir.topology(), rows))
    say(f"site: {lifecycle.site_url(here.labdir.topology())}/  (`lab creds` shows the demo user's login)")
    monitor = lifecycle.monitor_urls(here.labdir.topology())
    if monitor:
        say("monitor: " + ", ".join(f"{name.capitalize()} {url}" for name, url in monitor.items()))
    with contextlib.suppress(LabError):  # no CA before the first `lab up` reaches the recipes
        say(f"CA: {lifecycle.ca_file(here)}  (curl --cacert \"$(lab ca)\" ...; `lab ca --help`)")


@cli.command()
@debug_option
def ca() -> None:
    """Print the path of this lab's CA certificate, which signed the balancer's: `curl --cacert "$(lab ca)" URL`.

    Each lab makes its own CA on its first `lab up` (.lab/ca/: ca.crt, and ca.key readable by root only). Its name
    constraints permit only this lab's IPv4 subnet and balancer names; trust it in a browser to open the site without a warning.
    """
    click.echo(lifecycle.ca_file(project()))


@cli.command()
@debug_option
def creds() -> None:
    """Show the site's URL and its demo user's login: the name, and the password this lab made for it.

    The password is this lab's own, kept in .lab/secrets.toml (mode 0600, never in git); this is the one
    command that prints it.
    """
    login = lifecycle.creds(project())
    for label, value in (("site", login.url), ("sign in", login.login_url), ("user", login.username),
                         ("password", login.password)):
        click.echo(f"{label + ':':<10}{value}")


def split_items(flag: str, value: str) -> list[str]:
    """Split "a,b" into ["a", "b"]; an empty item ("1,,2", "gunicorn,") is a mistake, not nothing."""
    items = [item.strip() for item in value.split(",")]
    if not all(items):
        raise click.BadParameter(f"{value!r} has an empty item; give a comma-separated list like a,b",
                                 param_hint=f"'{flag}'")
    return items


def _tiers(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> list[str] | None:
    return [tier for value in values for tier in split_items("--tier", value)] or None


@cli.command()
@click.option("--tier", "tiers", multiple=True, metavar="TIER", callback=_tiers,
              help=f"Only these tiers ({', '.join(TIERS)}); repeatable, or comma-separated.")
@click.option("--junit-xml", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Also write a JUnit XML report.")
@step_option
@click.option("-v", "--verbose", is_flag=True, help="Name the skipped checks and why they were skipped.")
@debug_option
def test(tiers: list[str] | None, junit_xml: Path | None, step: int | None, verbose: bool) -> None:
    """Prove every tier with testinfra, and the site end to end through the balancer.

    Checks for what this lab does not run (e.g. Apache's, on a Gunicorn lab) are skipped: pytest prints them as
    `s`, and `-v` names them with the reason.
    """

    def skipped(checks: list[SkippedCheck]) -> None:
        if verbose:
            for check in checks:
                console.print(f"  [magenta]skipped[/] {escape(check.check)}: {escape(check.reason)}")
        say(f"{len(checks)} check(s) skipped: they do not apply to this lab"
            + ("" if verbose else " (`lab test -v` names them and says why)"))

    lifecycle.test(project(), tiers, junit_xml, step, on_skipped=skipped)
    say("all checks passed")


def _list(kind: Callable[[str], Any]) -> Callable[[Any, Any, str | None], tuple | None]:
    """A click callback turning "a,b" into a tuple of kind, with a one-line error naming the flag."""

    def parse(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple | None:
        if value is None:
            return None
        items = split_items(param.opts[0], value)
        try:
            return tuple(kind(item) for item in items)
        except ValueError:
            raise click.BadParameter(f"{value!r} is not a comma-separated list of {kind.__name__}s") from None

    return parse


@cli.command()
@click.option("--server", "servers", callback=_list(str), metavar="LIST", help="App servers to compare: gunicorn,mod_wsgi (default: the lab's).")
@click.option("--web", "webs", callback=_list(int), metavar="LIST", help="Web host counts to compare, e.g. 1,2 (default: the lab's).")
@click.option("--workers", callback=_list(int), metavar="LIST", help="App server processes per web host, e.g. 2,4.")
@click.option("--threads", callback=_list(int), metavar="LIST", help="Threads per app server process, e.g. 1,4.")
@click.option("--tune", callback=_list(str), metavar="LIST",
              help="Steps of the tuning ladder, each on top of the previous: e.g. baseline,pgbouncer,memcached,replica.")
@click.option("--scheme", "schemes", callback=_list(str), metavar="LIST", help="http, https, or both as http,https (default: the site's).")
@click.option("--users", type=int, default=32, show_default=True, help="Concurrent simulated users.")
@click.option("--spawn-rate", type=float, default=None, help="Users started per second (default: all at once).")
@click.option("--duration", type=int, default=20, show_default=True, help="Seconds per measured run.")
@click.option("--warmup", type=int, default=5, show_default=True, help="Seconds of uncounted warm-up per configuration.")
@click.option("--repeats", type=int, default=3, show_default=True, help="Measured runs per configuration.")
@click.option("--processes", type=int, default=1, show_default=True, help="Locust processes (one is usually best on 2 cores).")
@click.option("--scenario", default="mix", show_default=True, help="Locustfile in loadtests/: mix, hello or api (the JSON API, docs/api.md).")
@click.option("--reference-wrk", is_flag=True, help="Also run wrk at the same target as a reference ceiling.")
@click.option("--compare", nargs=2, metavar="RUN_A RUN_B", default=None, help="Print the deltas between two earlier runs and exit.")
@click.option("--fail-under-rps", type=float, default=None, help="Exit 14 if any configuration's median req/s is below this.")
@click.option("--max-p95-ms", type=float, default=None, help="Exit 14 if any configuration's median p95 is above this.")
@click.option("--max-failed-pct", type=float, default=None,
              help="Exit 14 if any configuration's median share of failed requests is above this (%); such a cell is marked failed.")
@click.option("--shared-cpus", is_flag=True, help="Run Locust and wrk on the lab's CPUs too (no [bench] generator_cpus split).")
@debug_option
def bench(servers, webs, workers, threads, tune, schemes, users, spawn_rate, duration, warmup, repeats, processes,
          scenario, reference_wrk, compare, fail_under_rps, max_p95_ms, max_failed_pct, shared_cpus) -> None:
    """Load-test the site through the balancer with Locust: one configuration, or a matrix compared side by side.

    When it switches the lab (another server, web count, workers or threads), it puts the lab back as it found it
    afterwards, also after a failure or Ctrl-C.
    """
    if compare:
        console.print(comparison_table(lab.bench.compare(project(), *compare)))
        return
    lab.bench.check_threshold_values(fail_under_rps, max_p95_ms)
    request = lab.bench.BenchRequest(
        servers=servers, webs=webs, workers=workers or (None,), threads=threads or (None,), users=users,
        spawn_rate=spawn_rate, duration_s=duration, warmup_s=warmup, repeats=repeats, processes=processes, scenario=scenario,
        reference_wrk=reference_wrk, tune=tune, schemes=schemes, max_failed_pct=max_failed_pct, shared_cpus=shared_cpus,
    )
    run = lab.bench.bench(project(), request, say, functools.partial(show_result, verbose=False))
    console.print(matrix_table(run.cells, run.money, run.cells[0].settings.get("cpu_split", "") if run.cells else ""))
    for line in tls_cost_lines(run.cells):
        say(escape(line))  # a label is plain text, not rich markup
    if len(run.cells) > 1:
        say(escape(comparison_verdict(run.cells)))  # the report's verdict, here too
    say(f"report: {run.results_dir / 'report.html'}")
    lab.bench.check_thresholds(run.cells, fail_under_rps, max_p95_ms, max_failed_pct)


@cli.command(context_settings={"allow_interspersed_args": False})
@click.argument("host")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@debug_option
@click.pass_context
def ssh(ctx: click.Context, host: str, command: tuple[str, ...]) -> None:
    """Open a shell on HOST, or run COMMAND there.

    lab's options go before HOST (`lab ssh --debug web1`); everything after HOST is the command for HOST. Several
    words run as they are, each quoted (`lab ssh web1 ls -la /srv`, `lab ssh db1 sudo -u postgres psql bank -c '\\dt'`);
    one word is a shell command line for HOST (`lab ssh web1 'journalctl -u gunicorn | tail'`). As no program is
    called --help, `lab ssh web1 --help` shows this help; another option right after HOST is refused: `lab ssh web1
    -- CMD` runs a CMD that starts with "-".
    """
    if command and command[0] == "--":  # `lab ssh web1 -- CMD`: CMD as it is, even if it starts with "-"
        command = command[1:]
    elif command and command[0] in ctx.help_option_names:
        click.echo(ctx.get_help())
        return
    elif command and command[0].startswith("-"):
        raise UsageError(f"`lab ssh {host} {command[0]}`: lab's own options go before HOST; to run a command that "
                         f"starts with '-' on {host}: `lab ssh {host} -- {command[0]} ...`")
    argv = lifecycle.ssh_command(project(), host, command, terminal=sys.stdin.isatty() and sys.stdout.isatty())
    sys.stdout.flush()
    os.execvp(argv[0], argv)


@cli.group()
@debug_option
def failover() -> None:
    """Fail a tier over to its standby."""


@failover.command("db")
@debug_option
def failover_db() -> None:
    """Promote the standby db host, point every writer at it (pgbouncer: pause, repoint, resume), fence the old primary.

    A small write prober (one customer's transfers through the balancer, bounded in time and count) runs meanwhile;
    the report gives how long writes were refused, how many requests failed, and the confirmed transfers lost
    (must be 0). The next `lab up` makes the old primary a standby of the new one.
    """
    report = lab.failover.failover_db(project(), say, functools.partial(show_result, verbose=False))
    say(report.summary())
    if report.lost:
        raise lab.failover.FailoverFailed(f"confirmed transfers missing after the failover: {', '.join(report.lost)}")


@cli.command()
@debug_option
def destroy() -> None:
    """Remove every host, network, proxy and disk of the lab (keeps .lab/results and the caches)."""
    if lifecycle.destroy(project(), say):
        say("lab destroyed")
    else:
        say("no lab here: nothing to destroy")


@cli.command("forget-key")
@click.argument("host")
@debug_option
def forget_key(host: str) -> None:
    """Forget HOST's pinned SSH host key, on purpose (you re-made the host); the next `lab up` pins its new key."""
    if lifecycle.forget_key(project(), host):
        say(f"forgot {host}'s pinned host key: the next `lab up` pins the key it offers then")
    else:
        say(f"no key pinned for {host}: nothing to forget")


# -- workshop mode (lab/workshop.py): do a step by hand, check it, solve it, rewind it --------------------------

@cli.command("check")
@click.argument("step", type=int)
@debug_option
def check_step(step: int) -> None:
    """Run step STEP's checks against what is on the hosts now (no recipe is applied): did you do the step right?

    Each failing check prints why it failed and what to try; `lab solve STEP` does the step for you.
    """
    failed = workshop.check(project(), step)
    for failure in failed:
        console.print(f"  [bold red]failed[/] {escape(failure.check)}\n    why: {escape(failure.why)}\n"
                      f"    try: {escape(failure.hint)}")
    if failed:
        raise ChecksFailed(f"step {step}: {len(failed)} check(s) failed (`lab solve {step}` applies the step's recipes)")
    say(f"step {step}: every check passed")


@cli.command()
@click.argument("step", type=int)
@click.option("-v", "--verbose", is_flag=True, help="List unchanged recipes too.")
@debug_option
def solve(step: int, verbose: bool) -> None:
    """Apply step STEP's recipes (and any earlier step's left undone), as `lab up --step STEP` would: when stuck."""
    report = workshop.solve(project(), step, say, functools.partial(show_result, verbose=verbose))
    say(report.summary())


@cli.command()
@click.option("--no-checks", is_flag=True, help="Do not run the checks (faster): only what lab applied.")
@debug_option
def steps(no_checks: bool) -> None:
    """List the workshop's steps and, for this lab, which lab applied, which pass their checks, which can be reset to."""
    table = Table("step", "title", "applied by lab", "checks", "reset to")
    marks = {True: "[green]yes[/]", False: "no", None: "-"}
    for row in workshop.steps(project(), run_checks=not no_checks):
        checks = "-" if row.passes is None else ("[green]pass[/]" if row.passes else f"[red]{row.failed} failed[/]")
        table.add_row(str(row.number), row.title, marks[row.applied], checks, "yes" if row.snapshot else "no")
    console.print(table)
    say("checks: how many failed (a check that could not even start counts as failed: `lab check K` says why); "
        "reset to: a snapshot taken when lab itself finished the step (`lab up --step K` or `lab solve K`)")


@cli.command()
@click.option("--to-step", "to_step", type=int, required=True, metavar="K",
              help="The step whose end to go back to (0: the bare hosts of `lab up --step 0`).")
@debug_option
def reset(to_step: int) -> None:
    """Put every host back as it was at the end of step K (a snapshot taken when lab finished that step)."""
    seconds = workshop.reset(project(), to_step, say)
    following = [step for step in workshop.step_numbers() if step > to_step]
    next_hint = f"`lab check {following[0]}` shows what is next" if following else "`lab steps` shows where it stands"
    say(f"every host is back at the end of step {to_step} "
        f"({', '.join(f'{host} {s:.1f} s' for host, s in seconds.items())}); {next_hint}")


# -- step 4: deploys (lab/deploy.py; fabfile.py has the same tasks for Fabric's `fab`) --------------------------

@cli.command("deploy")
@debug_option
def deploy_command() -> None:
    """Roll out app/ as a new release, one web host at a time out of the balancer; stops if a host fails its health check."""
    say(deploys.deploy(project(), say).summary("deployed"))


@cli.command()
@debug_option
def rollback() -> None:
    """Put every web host back on the release before, the same rolling way as `lab deploy`."""
    say(deploys.rollback(project(), say).summary("rolled back to"))


# -- the workshop's demos (lab/demos.py) ------------------------------------------------------------------

@cli.group()
@debug_option
def demo() -> None:
    """The workshop's demos: each does one thing on purpose on this lab and says what to look for."""


@demo.command("shared-nothing")
@click.option("--undo", is_flag=True, help="Switch the site back to keeping no state of its own on a web host.")
@debug_option
def demo_shared_nothing(undo: bool) -> None:
    """Switch the site to the slides' global BALANCE and /tmp/report.txt (step 5's "shared nothing"): wrong at web=2."""
    for line in demos.shared_nothing(project(), say, undo=undo):
        say(line)


@demo.command("crash")
@click.argument("host", required=False)
@debug_option
def demo_crash(host: str | None) -> None:
    """Pull a web host's plug (default: the last one) while 8 clients load the site for 20 s: the balancer keeps serving."""
    for line in demos.crash(project(), say, host):
        say(line)


@cli.group()
@debug_option
def box() -> None:
    """Vagrant boxes lab builds itself (for offline workshops and CI)."""


@box.command("build")
@click.option("--rebuild", is_flag=True, help="Build and add the box again even if Vagrant already has it.")
@debug_option
def box_build(rebuild: bool) -> None:
    """Build the Debian 12 box for vagrant-libvirt locally (nothing from Vagrant Cloud) and add it to Vagrant."""
    say(f"box {lifecycle.build_box(say, rebuild=rebuild)} is ready")


@cli.group()
@debug_option
def cache() -> None:
    """What `lab up` fetches from the network, as one archive: for a workshop whose network may fail."""


@cache.command("export")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@debug_option
def cache_export(file: Path) -> None:
    """Write FILE: the root filesystem, Debian packages and wheels this folder's lab came up with (gzip'd tar)."""
    offline_module.export(lifecycle.topology_here(project()), file, say)


@cache.command("import")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@debug_option
def cache_import(file: Path) -> None:
    """Put FILE's parts into this machine's caches (the packages as this folder's lab's own); then `lab up --offline`."""
    offline_module.import_archive(lifecycle.topology_here(project()), project().labdir, file, say)
    say("imported: `lab up --offline` needs nothing from the network now")


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; the one place exceptions become exit codes."""
    args = sys.argv[1:] if argv is None else argv
    # Filled in while the command line is parsed: --debug counts where click reads it as lab's option (not after
    # `lab ssh HOST`, where it belongs to the remote command).
    options = {"debug": os.environ.get("LAB_DEBUG") == "1"}
    try:
        cli.main(args=args, prog_name="lab", standalone_mode=False, obj=options)
    except click.exceptions.Exit as done:
        sys.exit(done.exit_code)
    except click.exceptions.NoArgsIsHelpError as error:
        click.echo(error.ctx.get_help() if error.ctx else cli.get_help(click.Context(cli)))
        sys.exit(0)
    except click.UsageError as error:
        errors.print(f"lab: error: {one_line(error.format_message())} (see `lab --help`)", markup=False)
        sys.exit(UsageError.exit_code)
    except (click.Abort, KeyboardInterrupt):
        errors.print("lab: interrupted; what was done is kept: run the same command again to finish", markup=False)
        sys.stdout.flush()
        sys.stderr.flush()
        # Not sys.exit: that would wait for worker threads still blocked on remote commands.
        os._exit(exit_code_for(KeyboardInterrupt()))
    except LabError as error:
        if options["debug"]:
            traceback.print_exc()  # the traceback as well, and still the error's own exit code
        errors.print(f"lab: error: {one_line(error)}", markup=False)
        sys.exit(exit_code_for(error))
    except Exception as error:
        if options["debug"]:
            traceback.print_exc()
        errors.print(f"lab: internal error ({type(error).__name__}): {one_line(error)}; rerun with --debug", markup=False)
        sys.exit(exit_code_for(error))
