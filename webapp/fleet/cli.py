"""`udplab fleet init` and `udplab agent`: the commands of several machines (NATS).

`webapp/cli.py` hands these sub-commands here; the dashboard's own options stay there.
"""

import argparse
import asyncio
import signal
import sys
from pathlib import Path

from webapp.capflags import add_caps
from webapp.fleet.config import DEFAULT_LISTEN, Creds, FleetError, check_machine

# The dashboard's caps an agent takes (webapp/capflags.py), read the same way: an agent's
# flags bound what its workers may do and the dashboard cannot widen them.
AGENT_CAPS = ("--allow-limited-broadcast", "--allow-net", "--worker-rate", "--worker-bytes",
              "--app-factor", "--allow-amplification", "--replies-per-source", "--max-workers",
              "--events-per-second")


def init_parser(sub) -> None:
    p = sub.add_parser("init", help="write nats-server's config and every machine's "
                       "credentials", description="Write DIR/nats-server.conf, "
                       "DIR/dashboard.creds and DIR/<machine>.creds (mode 0600, a new random "
                       "secret each). Each machine may receive only its own commands and "
                       "publish only its own events and replies.")
    p.add_argument("dir", type=Path, metavar="DIR")
    p.add_argument("--machines", required=True, metavar="A,B,C",
                   help="the lab machines' names, comma-separated")
    p.add_argument("--listen", default=DEFAULT_LISTEN, metavar="HOST:PORT",
                   help=f"where nats-server listens (default {DEFAULT_LISTEN})")
    p.add_argument("--url-host", default=None, metavar="NAME",
                   help="the name or address the machines reach nats-server by (default: "
                   "the --listen host, or NATS-HOST to fill in when it listens on all)")
    p.add_argument("--tls-cert", default=None, metavar="FILE",
                   help="nats-server's TLS certificate (then the URLs are tls://)")
    p.add_argument("--tls-key", default=None, metavar="FILE", help="its private key")


def agent_parser(prog: str = "udplab agent") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="Run this machine's UDP Lab engine "
                                "for a dashboard, over NATS (no HTTP port).")
    p.add_argument("--nats", default=None, metavar="URL",
                   help="nats-server's URL, nats://HOST:4222 or tls://HOST:4222 (default: "
                   "the one in the credentials file)")
    p.add_argument("--name", required=True, help="this machine's name, as in fleet init")
    p.add_argument("--creds", required=True, type=Path, metavar="FILE",
                   help="this machine's credentials file from fleet init")
    p.add_argument("--tls-ca", default=None, metavar="FILE",
                   help="the CA that signed nats-server's certificate, if not a public one")
    add_caps(p, AGENT_CAPS, agent=True)
    return p


def fleet_main(argv: list[str]) -> int:
    """`udplab fleet init ...`"""
    parser = argparse.ArgumentParser(prog="udplab fleet",
                                     description="Set up several lab machines (NATS).")
    init_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    from webapp.fleet import config

    machines = [m.strip() for m in args.machines.split(",") if m.strip()]
    try:
        written = config.init(args.dir, machines, listen=args.listen, url_host=args.url_host,
                              tls_cert=args.tls_cert, tls_key=args.tls_key)
    except FleetError as exc:
        print(f"udplab fleet init: {exc}", file=sys.stderr)
        return 2
    url = Creds.load(written["dashboard"]).url
    print(f"Wrote {written['server']} and {len(machines) + 1} credentials files "
          f"(mode 0600) in {args.dir}.\n\n"
          f"On the teacher's machine (the messaging server):\n\n"
          f"    nats-server -c {written['server']}\n\n"
          f"The dashboard:\n\n"
          f"    udplab --nats {url} --creds {written['dashboard']}\n\n"
          f"On each lab machine (copy only its own .creds file there):\n")
    for machine in machines:
        print(f"    udplab agent --nats {url} --name {machine} --creds {machine}.creds")
    if "NATS-HOST" in url:
        print("\nReplace NATS-HOST with the teacher's machine's address (or pass --url-host).")
    return 0


def agent_main(argv: list[str]) -> int:
    """`udplab agent ...`: serve this machine until Ctrl+C or SIGTERM."""
    args = agent_parser().parse_args(argv)
    try:
        check_machine(args.name)
        creds = Creds.load(args.creds)
        if creds.user != args.name:
            raise FleetError(f"{args.creds} holds the credentials of {creds.user!r}, not of "
                             f"{args.name!r}: use {args.name}.creds from fleet init")
        url = args.nats or creds.url
        if not url or "NATS-HOST" in url:
            raise FleetError("say where nats-server is: --nats nats://HOST:4222")
    except FleetError as exc:
        print(f"udplab agent: {exc}", file=sys.stderr)
        return 2
    try:
        import uvloop
        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    try:
        return runner(_run_agent(args, creds, url))
    except FleetError as exc:
        print(f"udplab agent: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0


async def _run_agent(args: argparse.Namespace, creds: Creds, url: str) -> int:
    import ipaddress

    from webapp.engine import Supervisor, lab
    from webapp.engine.policy import Policy
    from webapp.fleet.agent import Agent
    from webapp.fleet.connection import Connection
    from webapp.fleet.machine import LocalMachine

    def say(line: str) -> None:
        print(f"udplab agent {args.name}: {line}", file=sys.stderr, flush=True)

    policy = Policy(
        allow_limited_broadcast=args.allow_limited_broadcast,
        allowed_networks=tuple(ipaddress.ip_network(n) for n in args.allow_net),
        worker_rate=args.worker_rate, worker_bytes=args.worker_bytes,
        app_factor=args.app_factor, max_workers=args.max_workers,
        amplification=args.allow_amplification, replies_per_source=args.replies_per_source,
        events_per_second=args.events_per_second,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    connection = Connection(url, creds, name=f"udplab-agent-{args.name}", say=say,
                            tls_ca=args.tls_ca)
    opening = asyncio.ensure_future(connection.open())
    await asyncio.wait([opening, asyncio.ensure_future(stop.wait())],
                       return_when=asyncio.FIRST_COMPLETED)
    if not opening.done():
        opening.cancel()
        return 0
    nc = opening.result()
    # as the dashboard does at its start: a lab whose agent was killed (SIGKILL, power cut)
    # leaves its namespaces behind; their names carry that agent's process id
    orphans = await loop.run_in_executor(None, lab.clean_orphans)
    if orphans:
        say(f"removed {len(orphans)} namespaces left by a lab whose agent was killed")
    try:
        async with Supervisor(policy=policy) as supervisor:
            agent = Agent(LocalMachine(supervisor, args.name), nc)
            await agent.subscribe()
            await connection.check_refused()
            serving = asyncio.ensure_future(agent.serve())
            print(f"UDP Lab agent {args.name} is serving the fleet through {url}", flush=True)
            waiting = asyncio.ensure_future(stop.wait())
            await asyncio.wait([serving, waiting, connection.refused],
                               return_when=asyncio.FIRST_COMPLETED)
            waiting.cancel()
            await supervisor.stop_all()
            serving.cancel()
            await asyncio.wait([serving])
            if nc.is_connected:
                try:
                    await agent.finish()  # the `stopped` events reach the dashboard
                except Exception:  # nats-server gone meanwhile: nothing more to say
                    pass
            if connection.refused.done():
                await connection.check_refused(0)
            if serving.done() and not serving.cancelled() and serving.exception():
                raise serving.exception()
    finally:
        await connection.close()
    say("stopped: every worker's socket is closed")
    return 0


def check_dashboard(url: str | None, creds_path: Path | None, timeout: float = 5.0) -> str | None:
    """Before the dashboard starts with --nats: can it join? None if so, else why not (one
    line), so that a wrong secret is a plain message rather than a failed start-up."""
    if not url or not creds_path:
        return "joining a fleet needs both --nats URL and --creds FILE (dashboard.creds)"
    try:
        creds = Creds.load(creds_path)
    except FleetError as exc:
        return str(exc)
    if creds.machine is not None:
        return (f"{creds_path} holds the credentials of machine {creds.user!r}: the dashboard "
                "needs dashboard.creds from fleet init")

    async def attempt() -> str | None:
        from webapp.fleet.connection import Connection

        connection = Connection(url, creds, name="udplab-dashboard-check")
        try:
            async with asyncio.timeout(timeout):
                await connection.open()
        except FleetError as exc:
            return str(exc)
        except TimeoutError:
            return (f"nats-server at {url} does not answer: start it there "
                    "(nats-server -c nats-server.conf), or check --nats")
        finally:
            await connection.close()
        return None

    return asyncio.run(attempt())
