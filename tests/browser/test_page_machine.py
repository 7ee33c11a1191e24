"""Issue 4 in a real Chromium: the "This machine" panel, the port lookup box, the binding
explorer, listeners and a loopback broadcast from the forms, and the socket options panel.

Datagrams go to loopback only (127.0.0.1, 127.0.0.2 and 127.255.255.255).
"""

import json
import re
import shutil
import subprocess

from dashboard import free_udp_port, open_dashboard, unique
from playwright.sync_api import expect

SLOW = 10_000  # ms: the binding explorer starts and stops a dozen workers





def stop(live, *worker_ids):
    with live.client() as api:
        for worker_id in worker_ids:
            api.delete(f"/api/workers/{worker_id}")


def kernel_interfaces() -> list[dict]:
    ip = shutil.which("ip")
    assert ip, "iproute2's `ip` is needed"
    return json.loads(subprocess.run([ip, "-j", "addr"], capture_output=True, text=True,
                                     timeout=10, check=True).stdout)


def test_machine_panel_lists_the_interfaces(page, live):
    open_dashboard(page, live)
    panel = page.get_by_role("region", name="This machine")
    rows = panel.locator("table.ifaces tbody tr")
    kernel = kernel_interfaces()
    expect(rows).to_have_count(len(kernel))
    for row, k in zip(rows.all(), kernel, strict=True):
        cells = row.locator("td")
        expect(cells.nth(0).locator("code")).to_have_text(k["ifname"])
        expect(cells.nth(2)).to_have_text(str(k["mtu"]))
    expect(panel).to_contain_text("127.0.0.1/8")
    assert page.console_errors == []


def test_port_lookup_answers_without_a_reload(page, live):
    open_dashboard(page, live)
    page.evaluate("window.__sameDocument = 'yes'")
    url = page.url
    form = page.locator("#port-form")
    form.locator("input[name=port]").fill("domain")
    form.get_by_role("button", name="Look up").click()
    result = page.locator("#port-result")
    expect(result).to_contain_text(re.compile(r"UDP port 53 is domain"))
    expect(result).to_contain_text("well-known")
    assert page.evaluate("window.__sameDocument") == "yes"  # no page load happened
    assert page.url == url
    form.locator("input[name=port]").fill("nosuch")
    form.get_by_role("button", name="Look up").click()
    expect(page.locator("#port-result .error")).to_contain_text("No UDP service is named")
    assert page.evaluate("window.__sameDocument") == "yes"
    assert page.console_errors == []


def test_binding_explorer_button_fills_the_table(page, live):
    open_dashboard(page, live)
    page.get_by_role("button", name="Explore binding").click()
    table = page.locator("#binding-result table")
    verdicts = table.locator("td.verdict")
    expect(verdicts).to_have_count(15, timeout=SLOW)  # 6 of them IPv6 (issue 16)
    expect(verdicts.filter(has_text=re.compile("^conflict$"))).to_have_count(3)
    expect(verdicts.last).to_have_text("Connection refused")
    expect(table.locator("tr.outcome-bad").filter(has_text="Connection refused")) \
        .to_have_count(1)
    expect(verdicts.filter(has_text="reached the 127.0.0.2 server")).to_have_count(1)
    assert page.console_errors == []


def start_listener(page, name, port):
    panel = page.locator("#listener-panel")
    if not panel.evaluate("d => d.open"):
        panel.locator("summary").click()
    form = page.locator("#listener-form")
    expect(form.locator("input[name=host]")).to_have_value("0.0.0.0")
    form.locator("input[name=port]").fill(str(port))
    form.locator("input[name=name]").fill(name)
    form.get_by_role("button", name="Start listener").click()
    expect(page.locator("#listener-result")).to_contain_text(f"Started listener {name}")


def test_broadcast_from_the_forms_is_heard_by_both_listeners(page, live):
    port = free_udp_port()
    first, second = unique("ear-a"), unique("ear-b")
    open_dashboard(page, live)
    try:
        start_listener(page, first, port)
        start_listener(page, second, port)
        expect(page.locator("#log-rows")).to_contain_text(
            f"Listening for datagrams at ('0.0.0.0', {port})")
        page.locator("#broadcast-panel summary").click()
        form = page.locator("#broadcast-form")
        expect(form.locator("input[name=host]")).to_have_value("127.255.255.255")
        form.locator("input[name=port]").fill(str(port))
        form.get_by_role("button", name="Send broadcast").click()
        expect(page.locator("#broadcast-result .ok")).to_contain_text("Started broadcast")
        heard = page.locator("#log-rows .ev-sent").filter(has_text="heard by")
        expect(heard.first).to_contain_text(f"heard by {first}, {second}")
        expect(page.locator("#log-rows")).to_contain_text("says: 'Broadcast datagram!'")
    finally:
        stop(live, first, second)
    assert page.console_errors == []


def test_socket_options_panel_sets_rcvbuf(page, live):
    name = unique("opts")
    with live.client() as api:
        api.start(kind="server", name=name, port=0)
    try:
        open_dashboard(page, live)
        form = page.locator("#options-form")
        form.locator("input[name=options]").fill(name)
        form.get_by_role("button", name="Show options").click()
        body = page.locator("#options-body")
        expect(body.locator("caption")).to_contain_text(f"Socket options of {name}")
        expect(body.locator("td[data-option=SO_TYPE]")).to_contain_text("SOCK_DGRAM")
        row = body.locator("tr").filter(has=page.locator("td[data-option=SO_RCVBUF]"))
        row.locator("input[name=value]").fill("4096")
        row.get_by_role("button", name="Set").click()
        body = page.locator("#options-body")
        expect(body.locator(".ok")).to_contain_text("the kernel now holds 8192 bytes")
        expect(body.locator("td[data-option=SO_RCVBUF]")).to_contain_text("8192 bytes")
    finally:
        stop(live, name)
    assert page.console_errors == []
