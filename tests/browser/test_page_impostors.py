"""Issue 3 in a real Chromium: the "Who was fooled?" experiment, Pause/Resume on a server
card, the Impostor form, and the page at phone width."""

import re

from dashboard import free_udp_port, open_dashboard, unique
from playwright.sync_api import expect

VERDICT_TIMEOUT = 5_000  # ms: the experiment spoofs at 0.3 s and resumes at 0.8 s





def cleanup(live, worker_ids=(), run_ids=()):
    """Stop what a test started on the shared server (experiments start a server too)."""
    with live.client() as api:
        ids = list(worker_ids)
        for run_id in run_ids:
            run = api.get(f"/api/experiments/{run_id}").json()
            ids += [run["server"], *run["clients"].values(), *run["spoofers"]]
        for worker_id in ids:
            api.delete(f"/api/workers/{worker_id}")


def verdict_row(table, mode):
    return table.locator("tbody tr").filter(
        has=table.page.locator("code", has_text=re.compile(f"^{re.escape(mode)}$")))


def run_experiment(page, previous=None):
    """Click the button; the run's id, from the line shown under the form (once it no longer
    shows the `previous` run's)."""
    page.get_by_role("button", name="Run the impostor experiment").click()
    result = page.locator("#impostor-result .ok")
    if previous:
        expect(result).not_to_contain_text(f"Started {previous}:")
    expect(result).to_contain_text(re.compile(r"Started impostor-\d+"))
    return re.search(r"impostor-\d+", result.inner_text()).group(0)


def start_server_from_form(page, name, port):
    form = page.locator("#server-form")
    form.locator("input[name=port]").fill(str(port))
    form.locator("input[name=name]").fill(name)
    form.get_by_role("button", name="Start server").click()
    expect(page.locator("#server-result")).to_contain_text(f"Started server {name}")
    card = page.locator(f"#worker-{name}")
    expect(card.locator(".state")).to_have_text("running")
    return card


def pause(card):
    card.get_by_role("button", name="Pause").click()
    expect(card.locator(".state")).to_have_text("paused")
    expect(card.get_by_role("button", name="Resume")).to_be_visible()
    expect(card.get_by_role("button", name="Pause")).to_have_count(0)


def start_waiting_client_from_form(page, name, port, wait):
    form = page.locator("#client-form")
    form.locator("input[name=port]").fill(str(port))
    form.locator("input[name=name]").fill(name)
    form.locator("select[name=mode]").select_option("promiscuous")
    form.locator("summary", has_text="Backoff").click()
    form.locator("input[name=timeout]").fill(str(wait))
    form.locator("input[name=give_up_after]").fill(str(wait))
    form.get_by_role("button", name="Start client").click()
    expect(page.locator("#client-result")).to_contain_text(f"Started client {name}")
    return page.locator(f"#worker-{name}")


def test_who_was_fooled(page, live):
    open_dashboard(page, live)
    runs = []
    try:
        runs.append(run_experiment(page))
        table = page.locator("#experiments table.verdicts").first
        expect(table.locator("caption")).to_contain_text(re.compile(f"^{runs[0]}:"))
        expect(table.locator("tbody tr")).to_have_count(4)
        expect(verdict_row(table, "promiscuous").locator(".verdict")).to_contain_text(
            "fooled", timeout=VERDICT_TIMEOUT)
        for mode in ("check-address", "request-id"):
            expect(verdict_row(table, mode).locator(".verdict")).to_contain_text(
                "refused", timeout=VERDICT_TIMEOUT)
        expect(verdict_row(table, "connected").locator(".verdict")).to_have_text(
            "✓ never saw it", timeout=VERDICT_TIMEOUT)

        forge = page.locator("#impostor-form input[name=forge]")
        expect(forge).to_be_enabled()  # the session server runs as root, like CI
        forge.check()
        runs.append(run_experiment(page, previous=runs[0]))
        table = page.locator("#experiments table.verdicts").first
        expect(table.locator("caption")).to_contain_text(re.compile(f"^{runs[1]}:"))
        expect(table.locator("caption")).to_contain_text("forged as the server")
        expect(table.locator("tbody tr")).to_have_count(4)
        expect(verdict_row(table, "connected").locator(".verdict")).to_contain_text(
            "fooled", timeout=VERDICT_TIMEOUT)
        expect(verdict_row(table, "promiscuous").locator(".verdict")).to_contain_text(
            "fooled", timeout=VERDICT_TIMEOUT)
        expect(verdict_row(table, "check-address").locator(".verdict")).to_contain_text(
            "fooled", timeout=VERDICT_TIMEOUT)
        expect(verdict_row(table, "request-id").locator(".verdict")).to_have_text(
            "✓ refused it", timeout=VERDICT_TIMEOUT)
        # the first run's table is still shown, below the new one
        expect(page.locator("#experiments caption", has_text=f"{runs[0]}:")).to_have_count(1)
    finally:
        cleanup(live, run_ids=runs)
    assert page.console_errors == []


def test_pause_and_resume_buttons(page, live):
    open_dashboard(page, live)
    server_name, client_name = unique("pb-srv"), unique("pb-cli")
    port = free_udp_port()
    try:
        card = start_server_from_form(page, server_name, port)
        pause(card)
        client_card = start_waiting_client_from_form(page, client_name, port, wait=2)
        expect(card.locator("[data-counter=waiting]")).to_have_text("1", timeout=1_500)
        expect(client_card.locator(".state")).to_have_text("running")
        card.get_by_role("button", name="Resume").click()
        expect(card.locator(".state")).to_have_text("running")
        expect(card.get_by_role("button", name="Pause")).to_be_visible()
        expect(client_card.locator(".state")).to_have_text("finished")
        expect(client_card.locator("[data-counter=replies]")).to_have_text("1")
        expect(client_card.locator("[data-counter=gave_up]")).to_have_text("0")
        expect(card.locator("[data-counter=waiting]")).to_have_text("0")
        expect(card.locator("[data-counter=replied]")).to_have_text("1")
        expect(page.locator("#log-rows .ev-resumed").first).to_contain_text("Resumed")
    finally:
        cleanup(live, [server_name, client_name])
    assert page.console_errors == []


def test_impostor_form_fools_a_waiting_client(page, live):
    open_dashboard(page, live)
    server_name, client_name = unique("if-srv"), unique("if-cli")
    spoofer_name = unique("if-spoof")
    port = free_udp_port()
    try:
        card = start_server_from_form(page, server_name, port)
        pause(card)
        client_card = start_waiting_client_from_form(page, client_name, port, wait=5)
        expect(card.locator("[data-counter=waiting]")).to_have_text("1")

        panel = page.locator("#spoofer-panel")
        expect(panel.locator("input[name=target]")).to_be_hidden()
        panel.locator("summary").click()
        form = panel.locator("#spoofer-form")
        form.locator("input[name=target]").fill(client_name)
        expect(form.locator("input[name=message]")).to_have_value("FAKE")
        # the host field has a default; the target decides where the datagram goes
        form.get_by_role("button", name="Send impostor reply").click()
        expect(page.locator("#spoofer-result")).to_contain_text("Started impostor")
        expect(page.locator("#log-rows")).to_contain_text(
            re.compile(r"The server \('127\.0\.0\.1', \d+\) replied 'FAKE'"))
        expect(client_card.locator("[data-counter=unexpected]")).to_have_text("1")
        expect(client_card.locator(".state")).to_have_text("finished")
    finally:
        with live.client() as api:
            spoofers = [w["id"] for w in api.get("/api/workers").json()["workers"]
                        if w["kind"] == "spoofer" and w["spec"].get("target") == client_name]
        cleanup(live, [server_name, client_name, spoofer_name, *spoofers])
    assert page.console_errors == []


def test_phone_width_has_no_horizontal_scroll(page, live):
    """At 390 px the page must not scroll sideways, whatever it shows: a finished "Who was
    fooled?" table (its request-id row has a long unbroken answer) and a server card with
    its stream table. Only the event log scrolls, inside its own box."""
    name, server_name, stream_name = unique("phone"), unique("phone-srv"), unique("phone-st")
    runs = []
    with live.client() as api:
        run = api.post("/api/experiments/impostor")
        assert run.status_code == 201, run.text
        runs.append(run.json()["id"])
        server = api.start(kind="server", name=server_name, port=0)
        api.start(kind="stream", name=stream_name, port=server["local"][1], count=100,
                  rate=10000)
    try:
        page.set_viewport_size({"width": 390, "height": 844})
        open_dashboard(page, live)
        table = page.locator("#experiments table.verdicts",
                             has=page.locator("caption", has_text=f"{runs[0]}:"))
        expect(table.locator(".verdict-waiting")).to_have_count(0, timeout=VERDICT_TIMEOUT)
        # the widest content: the request-id client's real answer (#ID:<hex> Your data was…)
        expect(verdict_row(table, "request-id").locator("td").nth(3)).to_contain_text(
            "Your data was", timeout=VERDICT_TIMEOUT)
        expect(page.locator(f"#worker-{stream_name} .state")).to_have_text("finished")
        expect(page.locator(f"#worker-{server_name} table.streams tbody tr")).to_have_count(1)
        for panel in ("#spoofer-panel", "#stream-panel"):
            page.locator(f"{panel} > summary").click()
        page.locator("#server-form summary").click()
        page.locator("#client-form summary").click()
        wide = page.evaluate("""() => [...document.querySelectorAll('main *')]
            .filter(e => !e.closest('.log-scroll') && e.getBoundingClientRect().right > 391)
            .slice(0, 5).map(e => `${e.tagName}.${e.className}: ${e.textContent.trim()
            .slice(0, 40)}`)""")
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390 + 1, f"the page scrolls sideways at phone width: {width} px; {wide}"

        # the forms are usable: every field and button fits in the viewport and works
        for selector in ("#server-form", "#client-form", "#spoofer-form", "#stream-form",
                         "#impostor-form"):
            for control in page.locator(f"{selector} input:not([type=hidden]), "
                                        f"{selector} select, {selector} button").all():
                box = control.bounding_box()
                assert box is not None, (selector, control)
                assert box["x"] >= 0 and box["x"] + box["width"] <= 390 + 1, (selector, box)
        form = page.locator("#server-form")
        form.locator("input[name=port]").fill("0")
        form.locator("input[name=name]").fill(name)
        form.get_by_role("button", name="Start server").click()
        expect(page.locator("#server-result")).to_contain_text(f"Started server {name}")
        expect(page.locator(f"#worker-{name} .state")).to_have_text("running")
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390 + 1, f"a new card makes the page scroll sideways: {width} px"
    finally:
        cleanup(live, [name, server_name, stream_name], run_ids=runs)
    assert page.console_errors == []
