"""The Lab panel of another machine, in a real Chromium at 1280x720: its machine picker (this
machine, a, b) shows b's own lab, and the panel's buttons, pressed for 120 ms, build it, run a
scenario on it and tear it down on b (its agent does), with htmx and as plain form
navigations; the dashboard's own lab is left alone. The read-only viewer sees no picker and
no button. A dashboard with --nats and agents a and b in their own namespaces on a bridge made
here (test_page_fleet's fixture); the scenario's datagrams stay inside b's lab."""

import re
import time

import pytest
from dashboard import open_dashboard, press
from playwright.sync_api import expect
from test_page_fleet import fleet_page, machine_row  # noqa: F401 (fleet_page: a fixture)
from test_page_history import visible_controls
from test_page_recipes import viewer_token
from test_page_stage import on_screen

LAB_WAIT = 60_000  # ms: an agent's build runs some 40 `ip` commands on a shared machine


def lab_of(api, machine: str | None = None) -> dict:
    response = api.get("/api/lab", params={"machine": machine} if machine else None)
    assert response.status_code == 200, response.text
    return response.json()


def machines_up(api, *names: str) -> None:
    """Until the fleet lists `names` up (bounded): a page rendered then offers them."""
    deadline = time.monotonic() + 15
    while True:
        found = {m["name"]: m["state"] for m in api.get("/api/machines").json()["machines"]}
        if all(found.get(n) == "up" for n in names):
            return
        assert time.monotonic() < deadline, f"{names} not up: {found}"
        time.sleep(0.1)


@pytest.mark.timeout(240)  # b's lab built and torn down, a scenario on it
@pytest.mark.parametrize("javascript", [True, False], ids=["htmx", "no-javascript"])
def test_the_lab_panel_builds_uses_and_tears_down_another_machines_lab(
        browser, page, fleet_page, javascript):
    lan, dashboard = fleet_page
    with dashboard.client() as api:
        api.timeout = LAB_WAIT / 1000
        machines_up(api, "a", "b")
        assert lab_of(api, "b")["built"] is False and lab_of(api)["built"] is False
        if javascript:
            page.set_viewport_size({"width": 1280, "height": 720})
            open_dashboard(page, dashboard)
        else:  # every form posts as a plain navigation, and the page comes back
            page = browser.new_context(java_script_enabled=False,
                                       viewport={"width": 1280, "height": 720}).new_page()
            page.goto(f"{dashboard.base}/?token={dashboard.token}")
        page.set_default_timeout(LAB_WAIT)
        panel = page.get_by_role("region", name="Virtual LAN")
        picker = panel.locator("select[name=lab]")
        options = picker.locator("option")
        expect(options).to_have_count(3)
        values = [options.nth(i).get_attribute("value") for i in range(3)]
        assert values[0] == "" and sorted(values[1:]) == ["a", "b"], values  # in joining order
        expect(options.first).to_have_text("this machine")
        expect(picker).to_have_value("")  # the dashboard's own lab, by default
        picker.scroll_into_view_if_needed()  # the panel is down the page's right column
        on_screen(page, picker, "the Lab panel's machine picker")
        if javascript:  # htmx swaps the panel: the page is never loaded again
            page.evaluate("window.__sameDocument = 'yes'")
        try:
            picker.select_option("b")
            if not javascript:
                press(page, panel.get_by_role("button", name="Show"))
                expect(page).to_have_url(re.compile(r"/\?lab=b#lab$"))
            picker = panel.locator("select[name=lab]")
            expect(picker).to_have_value("b")
            # b's panel is in (the one picked from is gone): its Build form names b
            on_b = panel.locator("form[action='/lab'] input[type=hidden][name=machine]")
            expect(on_b).to_have_value("b")
            build = panel.get_by_role("button", name="Build the virtual LAN")
            build.scroll_into_view_if_needed()
            on_screen(page, build, "b's Build button")
            press(page, build)
            topology = panel.locator("svg.topology")
            expect(topology).to_be_visible()
            if not javascript:
                expect(page).to_have_url(re.compile(r"/\?lab=b#lab$"))
            expect(panel.locator("select[name=lab]")).to_have_value("b")
            built = lab_of(api, "b")
            assert built["built"] is True, "the panel's Build did not build b's lab"
            for host in built["hosts"]:
                expect(topology.locator("text.addr", has_text=host["address"])).to_have_count(1)
            assert lab_of(api)["built"] is False, "the dashboard's own lab was built"
            # its forms' "On" field follows this machine's lab, still unbuilt
            expect(page.locator("#server-form select[name=where]")).to_have_count(0)
            expect(panel).to_contain_text('"machine": "b", "where": "h1"')

            exchange = panel.locator(".scenarios").get_by_role("button", name="exchange",
                                                                exact=True)
            press(page, exchange)
            result = panel.locator("#lab-result")
            expect(result.locator("caption")).to_contain_text("lab-exchange-")
            verdicts = result.locator("td.verdict").all_inner_texts()
            assert verdicts and all(v.startswith("✓") for v in verdicts), verdicts
            expect(panel.locator("select[name=lab]")).to_have_value("b")

            press(page, panel.get_by_role("button", name="Tear down"))
            expect(panel.get_by_role("button", name="Build the virtual LAN")).to_be_visible()
            expect(panel.locator("svg.topology")).to_have_count(0)
            assert lab_of(api, "b")["built"] is False
            # and back to this machine's lab: its own, unbuilt
            panel.locator("select[name=lab]").select_option("")
            if not javascript:
                press(page, panel.get_by_role("button", name="Show"))
            expect(panel.locator("select[name=lab]")).to_have_value("")
            expect(panel.locator("input[name=machine]")).to_have_count(0)
            expect(panel.get_by_role("button", name="Build the virtual LAN")).to_be_visible()
        finally:
            api.delete("/api/lab", params={"machine": "b"})
        assert lab_of(api, "b")["built"] is False
    if javascript:
        assert page.evaluate("window.__sameDocument") == "yes", "the page was loaded again"
        assert page.console_errors == []


def test_the_viewer_sees_no_lab_picker_and_no_lab_button(browser, fleet_page):
    lan, dashboard = fleet_page
    with dashboard.client() as api:
        machines_up(api, "a", "b")
    context = browser.new_context(viewport={"width": 1280, "height": 720})
    viewer = context.new_page()
    try:
        viewer.goto(f"{dashboard.base}/?view={viewer_token(dashboard)}")
        expect(viewer.locator(".viewer-badge")).to_have_text("read-only view")
        for address in ("/", "/?lab=b"):  # b's lab shown by address: still nothing to press
            viewer.goto(f"{dashboard.base}{address}")
            panel = viewer.get_by_role("region", name="Virtual LAN")
            expect(panel.locator("select[name=lab]")).to_have_count(1)  # in the page, hidden
            expect(panel.locator("select[name=lab]")).to_be_hidden()
            assert visible_controls(viewer, "#lab") == [], address
    finally:
        context.close()
