"""Issue 5 in a real Chromium: the Virtual LAN panel of the session's udplab. Build the lab,
see its topology, place workers with the forms' "On" field, run the four scenarios, tear
it down. Needs CAP_NET_ADMIN (CI runs as root: a skip there is a failure).

Traffic stays inside the namespaces the app builds. The session server is left without a
lab whatever happens (torn down in a finally, and its namespaces checked).
"""

import subprocess

import pytest
from playwright.sync_api import expect

from webapp.engine import lab as lab_module

HOSTS = {"h1": "198.18.1.2", "h2": "198.18.1.3", "h3": "198.18.1.4", "h4": "198.18.2.4"}
SCENARIO_WAIT = 15_000  # ms: binding waits for a client to give up, mtu probes a path


def namespaces(prefix: str) -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=10,
                         check=True).stdout
    return sorted(line.split()[0] for line in out.splitlines() if line.startswith(prefix))


def lab_state(live) -> dict:
    with live.client() as api:
        return api.get("/api/lab").json()


def test_lab_panel_builds_runs_the_scenarios_and_tears_down(page, live):
    if not lab_module.can_build():
        pytest.skip("the virtual LAN needs CAP_NET_ADMIN (run the tests as root, as CI "
                    "does): " + lab_module.NEEDS_ADMIN)
    assert lab_state(live)["built"] is False, "the session server must start without a lab"
    app_prefix = f"{lab_module.PREFIX}{live.proc.pid}-"
    try:
        page.goto(f"{live.base}/?token={live.token}")
        expect(page.locator("#conn-status")).to_have_text("live")
        panel = page.get_by_role("region", name="Virtual LAN")
        expect(panel.locator("svg.topology")).to_have_count(0)
        expect(page.locator("#server-form select[name=where]")).to_have_count(0)

        panel.get_by_role("button", name="Build the virtual LAN").click()
        # every form's "On" field is swapped in place: it now offers the lab's hosts
        topology = panel.locator("svg.topology")
        expect(topology).to_be_visible()
        expect(page.locator("#conn-status")).to_have_text("live")
        for name, address in HOSTS.items():
            expect(topology.locator("text.name", has_text=name)).to_have_count(1)
            expect(topology.locator("text.addr", has_text=address)).to_have_count(1)
        expect(topology).to_contain_text("MTU 1280")
        expect(topology).to_contain_text("198.18.1.0/24")
        expect(topology).to_contain_text("198.18.2.0/24")
        built = lab_state(live)
        assert built["built"] is True
        assert len(namespaces(built["prefix"])) == 6
        for host in built["hosts"]:  # the IPv6 side is drawn too
            expect(topology.locator("text.addr6", has_text=host["address6"])).to_have_count(1)
        for subnet in built["subnets6"]:
            expect(topology).to_contain_text(subnet["network"])

        where = page.locator("#server-form select[name=where]")
        expect(where).to_be_visible()
        options = where.locator("option")
        expect(options).to_have_count(5)
        assert [options.nth(i).get_attribute("value") for i in range(5)] == \
            ["", "h1", "h2", "h3", "h4"]
        expect(options.nth(2)).to_have_text("h2 (198.18.1.3)")

        page.evaluate("window.__sameDocument = 'yes'")
        result = panel.locator("#lab-result")
        for name in ("exchange", "broadcast", "mtu", "binding"):
            panel.locator(".scenarios").get_by_role("button", name=name, exact=True).click()
            expect(result.locator("caption")).to_contain_text(f"lab-{name}-",
                                                              timeout=SCENARIO_WAIT)
            rows = result.locator("tbody tr")
            expect(rows.first).to_be_visible()
            assert rows.count() >= 2
            verdicts = result.locator("td.verdict").all_inner_texts()
            assert verdicts and all(v.startswith("✓") for v in verdicts), (name, verdicts)
            expect(result).not_to_contain_text("✕")
            expect(result.locator("tr.outcome-bad")).to_have_count(0)
        assert page.evaluate("window.__sameDocument") == "yes"  # scenarios swap, no reload

        panel.get_by_role("button", name="Tear down").click()
        expect(panel.get_by_role("button", name="Build the virtual LAN")).to_be_visible()
        expect(panel.locator("svg.topology")).to_have_count(0)
        expect(page.locator("#server-form select[name=where]")).to_have_count(0)
        expect(page.locator("#conn-status")).to_have_text("live")
        assert lab_state(live)["built"] is False
        assert namespaces(built["prefix"]) == []
        assert page.console_errors == []
    finally:
        with live.client() as api:
            response = api.delete("/api/lab")
            assert response.status_code == 200, response.text
            for worker in api.get("/api/workers").json()["workers"]:
                if worker["where"]:
                    api.delete(f"/api/workers/{worker['id']}")
        left = namespaces(app_prefix)
        for name in left:
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)
        assert left == [], f"the session server's lab was left behind: {left}"


def test_lab_topology_is_described_for_screen_readers(page, live):
    if not lab_module.can_build():
        pytest.skip("the virtual LAN needs CAP_NET_ADMIN (run the tests as root, as CI "
                    "does): " + lab_module.NEEDS_ADMIN)
    try:
        with live.client() as api:
            assert api.post("/api/lab").status_code == 201
        page.goto(f"{live.base}/?token={live.token}")
        topology = page.get_by_role("img", name="The virtual LAN")
        expect(topology).to_be_visible()
        label = topology.get_attribute("aria-label")
        assert "198.18.1.0/24" in label and "198.18.2.0/24" in label and "MTU 1280" in label
        assert lab_state(live)["hosts"][3]["mtu"] == 1280
        assert page.console_errors == []
    finally:
        with live.client() as api:
            assert api.delete("/api/lab").status_code == 200
        assert namespaces(f"{lab_module.PREFIX}{live.proc.pid}-") == []
