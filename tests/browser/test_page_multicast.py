"""Issue 16 on the page: a listener joins a group from its form, the Multicast form sends to
it, and the log says who heard it. Groups on loopback only (the forms' default interface)."""

import random

from playwright.sync_api import expect

from dashboard import free_udp_port, open_dashboard, unique


def test_join_from_the_listener_form_and_send_from_the_multicast_form(page, live):
    open_dashboard(page, live)
    group = f"239.255.{random.randrange(1, 255)}.{random.randrange(1, 255)}"
    port = free_udp_port()
    member = unique("member")
    page.locator("#listener-panel summary").click()
    form = page.locator("#listener-form")
    form.locator("input[name=port]").fill(str(port))
    form.locator("input[name=name]").fill(member)
    form.locator("input[name=join]").fill(group)
    form.get_by_role("button", name="Start listener").click()
    try:
        expect(page.locator("#log-rows")).to_contain_text(f"member of {group} on 127.0.0.1")
        page.locator("#multicast-panel summary").click()
        sender = page.locator("#multicast-form")
        expect(sender.locator("input[name=ttl]")).to_have_value("1")
        expect(sender.locator("input[name=loop][type=checkbox]")).to_be_checked()
        sender.locator("input[name=host]").fill(group)
        sender.locator("input[name=port]").fill(str(port))
        sender.locator("input[name=message]").fill("Hello from the page")
        sender.get_by_role("button", name="Send to group").click()
        expect(page.locator("#multicast-result")).to_contain_text("Started multicast")
        expect(page.locator("#log-rows")).to_contain_text(
            f"'Hello from the page' to group ('{group}', {port})")
        expect(page.locator("#log-rows")).to_contain_text(f"heard by {member}")
        expect(page.locator(f"#worker-{member} [data-counter=received]")).to_have_text("1")
        # a refusal shows beside the form, in words
        sender.locator("input[name=interface]").fill("eth0")
        sender.get_by_role("button", name="Send to group").click()
        expect(page.locator("#multicast-result .error")).to_contain_text("--allow-net")
    finally:
        with live.client() as api:
            api.delete(f"/api/workers/{member}")
