"""The cap flags `udplab` and `udplab agent` share (webapp/capflags.py): one table, so the same
text gives the same value, or the same refusal, on both."""

import pytest

from webapp.capflags import CAPS
from webapp.cli import parse_args
from webapp.fleet.cli import AGENT_CAPS, agent_parser

AGENT = ["--name", "a", "--creds", "a.creds"]
GOOD = {int: "7", float: "2.5"}  # any other type: a value its own check accepts
SAMPLES = {"--allow-net": "192.168.7.0/24", "--events-per-second": "0"}


def both(argv: list[str]) -> tuple[dict, dict]:
    return vars(parse_args(argv)), vars(agent_parser().parse_args([*AGENT, *argv]))


def test_the_agent_takes_caps_of_the_table_only():
    assert set(AGENT_CAPS) <= set(CAPS)
    dashboard, agent = both([])
    for flag in AGENT_CAPS:
        dest = flag.removeprefix("--").replace("-", "_")
        cap = CAPS[flag]
        default = [] if cap.repeat else cap.default if cap.type else False
        assert dashboard[dest] == agent[dest] == default, flag


@pytest.mark.parametrize("flag", AGENT_CAPS)
def test_a_shared_cap_reads_the_same_on_both(flag):
    cap = CAPS[flag]
    argv = [flag] if cap.type is None else [flag, SAMPLES.get(flag) or GOOD[cap.type]]
    dashboard, agent = both(argv)
    dest = flag.removeprefix("--").replace("-", "_")
    assert dashboard[dest] == agent[dest] != CAPS[flag].default, (dashboard[dest], agent[dest])


@pytest.mark.parametrize("flag", [f for f in AGENT_CAPS if CAPS[f].type is not None])
def test_a_shared_cap_refuses_the_same_on_both(flag, capsys):
    with pytest.raises(SystemExit):
        parse_args([flag, "5x"])
    refused = capsys.readouterr().err.splitlines()[-1]
    with pytest.raises(SystemExit):
        agent_parser().parse_args([*AGENT, flag, "5x"])
    assert capsys.readouterr().err.splitlines()[-1] == refused.replace("udplab:",
                                                                       "udplab agent:")
    assert f"argument {flag}: " in refused and "'5x'" in refused, refused


@pytest.mark.parametrize(("flag", "value", "words"), [
    ("--max-body", "1023", "'1023' is too small: give at least 1024 bytes"),
    ("--max-body", "-1", "'-1' is not a whole number of 0 or more"),
    ("--max-connections", "15", "'15' is too few: give at least 16 connections"),
    ("--max-connections", "many", "'many' is not a whole number of 0 or more"),
    ("--header-timeout", "-0.5", "'-0.5' is not a number of seconds above 0"),
    ("--allow-net", "10.0.0.0/33", "'10.0.0.0/33' is not a network: write it like "
     "192.168.1.0/24"),
])
def test_the_dashboards_caps_say_what_to_give(flag, value, words, capsys):
    with pytest.raises(SystemExit):
        parse_args([flag, value])
    assert f"argument {flag}: {words}" in capsys.readouterr().err


def test_the_least_a_cap_takes_is_taken():
    args = parse_args(["--max-body", "1024", "--max-connections", "16", "--header-timeout",
                       "0.001", "--allow-net", "10.1.2.3/8", "--keep-ended", "0"])
    assert (args.max_body, args.max_connections, args.header_timeout) == (1024, 16, 0.001)
    assert (args.allow_net, args.keep_ended) == (["10.0.0.0/8"], 0)
