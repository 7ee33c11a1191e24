"""Issue 15's page in a real Chromium: a dashboard started with --nats and two agents, each
in its own network namespace on a bridge this test made (tests/fleet's LAN, reused).

The Machines panel lists them; the forms' machine picker starts a server on machine a and a
client on machine b; cards, the log and the ladder name the machine; a SIGKILLed agent is
shown lost. Datagrams flow only between the namespaces (198.18.N.0/24, made here).
"""

import importlib.util
import re
import signal
from pathlib import Path

import pytest
from dashboard import open_dashboard, unique
from live import start_server, stop_and_check
from playwright.sync_api import expect
from test_page_stage import on_screen, page_does_not_scroll

_spec = importlib.util.spec_from_file_location(
    "fleet_fixtures", Path(__file__).resolve().parents[1] / "fleet" / "conftest.py")
fleet_fixtures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fleet_fixtures)  # the LAN helpers of tests/fleet, not a copy

LOST_WITHIN = 15_000  # ms: 10 s of silence, plus the watch's second and a redraw


@pytest.fixture(scope="module")
def fleet_page(tmp_path_factory):
    """nats-server on a bridge, agents a and b in namespaces, a dashboard joined to them."""
    lan = fleet_fixtures.Lan()
    server = dashboard = None
    try:
        lan.build(["a", "b"])
        server = fleet_fixtures.make_fleet(tmp_path_factory.mktemp("fleet"),
                                           f"{fleet_fixtures.SUBNET}.1", ["a", "b"]).start()
        lan.agent(server, "a")
        lan.agent(server, "b")
        dashboard = start_server(
            tmp_path_factory.mktemp("dashboard"),
            args=("--max-token-failures", "0", "--nats", server.url,
                  "--creds", str(server.dir / "dashboard.creds")))
        yield lan, dashboard
    finally:
        if dashboard is not None:
            stop_and_check(dashboard)
        lan.teardown()
        if server is not None:
            server.stop()


def machine_row(page, name):
    return page.locator(f"#machines tr[data-machine='{name}']")


def test_machines_panel_lists_the_agents_up(page, fleet_page):
    lan, dashboard = fleet_page
    open_dashboard(page, dashboard)
    panel = page.get_by_role("region", name="Machines")
    for name in ("a", "b"):
        row = machine_row(page, name)
        expect(row.locator("td.state")).to_have_text("up")
        expect(row.locator("td.addresses")).to_contain_text(lan.hosts[name])
    expect(panel.locator("tr[data-local]")).to_have_count(1)
    # "last seen" follows the agents' hellos with no worker running (updated every 3 s)
    seen = machine_row(page, "b").locator("td").nth(2)
    before = seen.inner_text()
    assert re.fullmatch(r"\d\d:\d\d:\d\d", before), before
    expect(seen).not_to_have_text(before, timeout=8_000)
    assert page.console_errors == []


def test_the_picker_and_panel_fit_a_projector(page, fleet_page, tmp_path):
    lan, dashboard = fleet_page
    page.set_viewport_size({"width": 1280, "height": 720})
    open_dashboard(page, dashboard)
    expect(machine_row(page, "b").locator("td.state")).to_have_text("up")
    picker = page.locator("#server-form select[name=machine]")
    expect(picker.locator("option")).to_have_count(3)  # this dashboard, a and b
    on_screen(page, picker, "the server form's machine picker")
    on_screen(page, page.locator("#server-start"), "Start server")
    page_does_not_scroll(page)
    page.screenshot(path=str(tmp_path / "fleet-1280x720.png"))
    print(f"screenshot: {tmp_path / 'fleet-1280x720.png'}")


def test_server_on_a_and_client_on_b_from_the_forms(page, fleet_page):
    lan, dashboard = fleet_page
    open_dashboard(page, dashboard)
    expect(machine_row(page, "b").locator("td.state")).to_have_text("up")
    server_name, client_name = unique("srv"), unique("cli")

    form = page.locator("#server-form")
    form.locator("select[name=machine]").select_option("a")
    # the host list now offers machine a's addresses, not this dashboard's
    expect(form.locator("input[name=host]")).to_have_attribute("list", "hosts-a")
    assert lan.hosts["a"] in page.locator("#hosts-a option").evaluate_all(
        "options => options.map(o => o.value)")
    form.locator("input[name=host]").fill(lan.hosts["a"])
    form.locator("input[name=port]").fill("1090")
    form.locator("input[name=name]").fill(server_name)
    form.get_by_role("button", name="Start server").click()
    expect(page.locator("#server-result")).to_contain_text(f"a · {server_name}")
    server_card = page.locator(f"#worker-a--{server_name}")
    expect(server_card.locator(".wid")).to_have_text(f"a · {server_name}")
    expect(server_card).to_contain_text(f"{lan.hosts['a']}:1090")

    form = page.locator("#client-form")
    form.locator("select[name=machine]").select_option("b")
    form.locator("input[name=host]").fill(lan.hosts["a"])
    form.locator("input[name=port]").fill("1090")
    form.locator("input[name=count]").fill("2")
    form.locator("input[name=interval]").fill("0.05")
    form.locator("input[name=name]").fill(client_name)
    form.get_by_role("button", name="Start client").click()
    expect(page.locator("#client-result")).to_contain_text(f"b · {client_name}")
    client_card = page.locator(f"#worker-b--{client_name}")
    expect(client_card.locator(".wid")).to_have_text(f"b · {client_name}")
    expect(client_card.locator("[data-counter=replies]")).to_have_text("2")
    expect(client_card.locator(".state")).to_have_text(re.compile("finished|stopped"))
    # the log and the ladder name the machine
    expect(page.locator("#log-rows td.w", has_text=f"b · {client_name}").first).to_be_visible()
    expect(page.locator("#log-rows td.w", has_text=f"a · {server_name}").first).to_be_attached()
    expect(page.locator("#ladder .who", has_text=f"b · {client_name}")).to_have_count(1)

    # the card's Stop goes to the server's own machine
    server_card.get_by_role("button", name="Stop").click()
    expect(server_card.locator(".state")).to_have_text("stopped")
    # Clear ended takes other machines' ended cards away too
    page.locator("#clear-ended").click()
    expect(server_card).to_have_count(0)
    expect(client_card).to_have_count(0)
    assert page.console_errors == []


def test_a_killed_agent_is_shown_lost(page, fleet_page):
    lan, dashboard = fleet_page
    open_dashboard(page, dashboard)
    expect(machine_row(page, "b").locator("td.state")).to_have_text("up")
    name = unique("held")
    with dashboard.client() as api:  # a server on b that is still running when b dies
        started = api.post("/api/workers", json={"machine": "b", "kind": "server",
                                                 "host": lan.hosts["b"], "port": 1091,
                                                 "name": name})
        assert started.status_code == 201, started.text
    card = page.locator(f"#worker-b--{name}")
    expect(card.locator(".state")).to_have_text("running")
    agent = next(a for a in lan.agents if a.name == "b")
    agent.proc.send_signal(signal.SIGKILL)
    agent.proc.wait(timeout=5)
    expect(machine_row(page, "b").locator("td.state")).to_have_text(
        "lost", timeout=LOST_WITHIN)
    expect(machine_row(page, "a").locator("td.state")).to_have_text("up")
    expect(card.locator(".state")).to_have_text("lost")  # its state is unknown now


def test_without_nats_the_page_has_no_machine_picker(page, live):
    open_dashboard(page, live)
    expect(page.locator("#server-form input[name=host]")).to_be_visible()
    expect(page.locator("select[name=machine]")).to_have_count(0)
    expect(page.locator("#machines-panel")).to_have_count(0)
