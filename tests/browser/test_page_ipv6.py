"""Issue 16 in a real Chromium: the forms take IPv6 (a dual-stack :: server heard by an IPv4
client, v6only from its checkbox) and the page writes IPv6 addresses as [addr]:port.
Traffic only to ::1 and 127.0.0.1."""

from dashboard import free_udp_port, open_dashboard, unique
from playwright.sync_api import expect


def start_server(page, host: str, port: int, name: str, v6only: bool = False) -> None:
    form = page.locator("#server-form")
    form.locator("input[name=host]").fill(host)
    form.locator("input[name=port]").fill(str(port))
    form.locator("input[name=name]").fill(name)
    if v6only:
        form.locator("summary", has_text="Traps and buffers").click()
        form.locator("input[name=v6only]").check()
    form.get_by_role("button", name="Start server").click()


def test_dual_stack_server_from_the_form_hears_ipv4_as_mapped(page, live):
    open_dashboard(page, live)
    port = free_udp_port()
    name = unique("dual")
    start_server(page, "::", port, name)
    expect(page.locator("#server-result")).to_contain_text(f"Started server {name} on [::]:{port}")
    expect(page.locator(f"#worker-{name}")).to_contain_text(f"[::]:{port}")
    expect(page.locator("#log-rows")).to_contain_text("dual-stack (v6only off)")

    client = page.locator("#client-form")
    client.locator("input[name=host]").fill("127.0.0.1")
    client.locator("input[name=port]").fill(str(port))
    client.locator("input[name=name]").fill(unique("four"))
    client.get_by_role("button", name="Start client").click()
    received = page.locator("#log-rows .ev-received").filter(has_text="[::ffff:127.0.0.1]:")
    expect(received.first).to_contain_text("IPv4-mapped ::ffff:a.b.c.d")
    page.locator(f"#worker-{name}").get_by_role("button", name="Stop").click()
    assert page.console_errors == []


def test_v6only_checkbox_reaches_the_engine(page, live):
    open_dashboard(page, live)
    start_server(page, "127.0.0.1", free_udp_port(), unique("v4"), v6only=True)
    expect(page.locator("#server-result .error")).to_contain_text("v6only is an IPv6 option")
    name = unique("six")
    port = free_udp_port()
    page.reload()
    expect(page.locator("#conn-status")).to_have_text("live")
    start_server(page, "::1", port, name, v6only=True)
    expect(page.locator("#server-result")).to_contain_text(f"on [::1]:{port}")
    expect(page.locator("#log-rows")).to_contain_text(f"Listening at [::1]:{port} (IPv6)")
    page.locator(f"#worker-{name}").get_by_role("button", name="Stop").click()
    # the one console line is the browser noting the refused (422) form post above
    assert all("422" in line for line in page.console_errors), page.console_errors
