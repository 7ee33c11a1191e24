"""Issue 14: the README's "A first experiment in five steps", done word by word in a real
Chromium, by clicking, on a udplab of the test's own (so its ids start at server-1, as after
`make run`).

The steps' actions are mirrored here, one function per step; what each step tells the
reader to keep, type or expect (the `quoted` parts) is read from README.md itself, so a
change to a value or an expected line there is tested as written. A change to the actions
(another button, another field) must be made here too: the step count and each step's
quoted parts are checked first, so the test says when the two drift apart.
"""

import re
import socket
import time
from pathlib import Path

from playwright.sync_api import expect
from test_page_recipes import (
    assert_clean,
    open_dashboard,
    own_server,  # noqa: F401  (a fixture: a udplab of this test's own)
)

README = Path(__file__).resolve().parents[2] / "README.md"
SECTION = "## A first experiment in five steps (listing 2-1)"
REPLY_WAIT = 20_000  # ms: five requests a second apart, with retries
GIVE_UP_WAIT = 15_000  # ms: 0.1 + 0.2 + 0.4 + 0.8 + 1.6 s of waiting, then the give-up
PORT_FREE_WAIT = 10.0  # s: another test may hold the book's port for a moment


def readme_steps() -> list[str]:
    """The numbered steps of the README's first experiment, each as one line of text."""
    text = README.read_text()
    assert SECTION in text, f"README.md has no section {SECTION!r}"
    body = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    steps = re.split(r"^\d+\. ", body, flags=re.M)[1:]
    # a step ends at the first blank line (what follows the list is not a step)
    return [" ".join(step.split("\n\n", 1)[0].split()) for step in steps]


def quoted(step: str) -> list[str]:
    return re.findall(r"`([^`]+)`", step)


def line(text: str) -> re.Pattern:
    """A quoted log line as a pattern: `…` stands for what differs on every run."""
    return re.compile(".*?".join(re.escape(part) for part in text.split("…")))


def wait_port_free(host: str, port: int) -> None:
    deadline = time.monotonic() + PORT_FREE_WAIT
    while True:  # bounded by the deadline
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            try:
                probe.bind((host, port))
                return
            except OSError:
                assert time.monotonic() < deadline, f"{host}:{port} stays in use by another program"
        time.sleep(0.2)


def log(page):
    return page.locator("#log-rows")


def step_2(page, words):
    host, port, listening = words
    form = page.locator("#server-form")
    expect(form.locator("input[name=host]")).to_have_value(host)  # "keep host …"
    expect(form.locator("input[name=port]")).to_have_value(port)
    wait_port_free(host, int(port))
    form.get_by_role("button", name="Start server").click()
    expect(log(page)).to_contain_text(listening)
    expect(page.locator("#worker-server-1 .state")).to_have_text("running")


def step_3(page, words):
    assigned, says, replied = words
    form = page.locator("#client-form")
    server = page.locator("#server-form")
    for field in ("host", "port"):  # "keep the same host and port"
        expect(form.locator(f"input[name={field}]")).to_have_value(
            server.locator(f"input[name={field}]").input_value())
    form.get_by_role("button", name="Start client").click()
    for text in (assigned, says, replied):
        expect(log(page)).to_contain_text(line(text))
    arrow = page.locator(".ladder a.item", has_text="The time is").first
    arrow.click()  # "click one to see its bytes"
    expect(page.locator("#datagram .hex")).to_contain_text("54 68 65 20")  # "The "


def step_4(page, words):
    (refusal,) = words
    page.locator("#server-form").get_by_role("button", name="Start server").click()
    expect(page.locator("#server-result .error")).to_contain_text(refusal)
    expect(page.locator("#worker-server-1 .state")).to_have_text("running")


def step_5(page, words):
    first, drop, seed, mode, count, dropping, waiting, doubled, always, down = words
    card = page.locator(f"#worker-{first}")
    card.get_by_role("button", name="Stop").click()
    expect(card.locator(".state")).to_have_text("stopped")
    server = page.locator("#server-form")
    server.locator("input[name=drop_rate]").fill(drop)
    server.locator("input[name=seed]").fill(seed)
    server.get_by_role("button", name="Start server").click()
    expect(page.locator("#server-result")).to_contain_text("Started server")
    client = page.locator("#client-form")
    client.locator("select[name=mode]").select_option(mode)
    client.locator("input[name=count]").fill(count)
    client.get_by_role("button", name="Start client").click()
    expect(log(page)).to_contain_text(line(dropping), timeout=REPLY_WAIT)
    expect(log(page)).to_contain_text(waiting)
    lossy = page.locator("#workers .card.kind-server", has_text="drops 50%")
    newest_client = page.locator("#workers .card.kind-client").last
    expect(newest_client.locator(".backoff")).to_contain_text(doubled, timeout=REPLY_WAIT)
    expect(newest_client.locator(".state")).to_have_text("finished", timeout=REPLY_WAIT)

    # "Then click Stop on the new server's card, set drop rate 1, start both again"
    lossy.get_by_role("button", name="Stop").click()
    expect(lossy.locator(".state")).to_have_text("stopped")
    server.locator("input[name=drop_rate]").fill(always)
    server.get_by_role("button", name="Start server").click()
    expect(page.locator("#workers .card.kind-server", has_text="drops 100%")
           .locator(".state")).to_have_text("running")
    client.get_by_role("button", name="Start client").click()
    expect(log(page).locator(".ev-gave-up").first).to_contain_text(down, timeout=GIVE_UP_WAIT)
    # "after waiting 0.1, 0.2, 0.4, 0.8 and 1.6 seconds": the newest client's timeline
    waits = page.locator("#workers .card.kind-client").last.locator(".backoff li")
    expect(waits).to_contain_text(["0.1 s", "0.2 s", "0.4 s", "0.8 s", "1.6 s"])


# what each step quotes, in order: the test reads these values from the README
STEPS = [
    (None, ["make run"]),
    (step_2, ["127.0.0.1", "1060", "Listening at ('127.0.0.1', 1060)"]),
    (step_3, ["The OS assigned me the address ('0.0.0.0', …)",
              "The client at ('127.0.0.1', …) says 'The time is …'",
              "The server ('127.0.0.1', 1060) replied 'Your data was 38 bytes long'"]),
    (step_4, ["Address already in use"]),
    (step_5, ["server-1", "0.5", "7", "connected", "5",
              "Pretending to drop packet from ('127.0.0.1', …)",
              "Waiting up to 0.1 seconds for a reply", "0.2 s", "1",
              "I think the server is down"]),
]


def test_readme_steps_and_this_test_agree():
    steps = readme_steps()
    assert len(steps) == len(STEPS), steps
    for number, (step, (_, words)) in enumerate(zip(steps, STEPS, strict=True), start=1):
        assert quoted(step) == words, f"README step {number} changed: update this test\n{step}"


def test_the_readme_first_experiment_by_clicking(page, own_server):  # noqa: F811
    reports = open_dashboard(page, own_server)  # step 1: the URL `make run` prints
    for step, (action, _) in zip(readme_steps(), STEPS, strict=True):
        if action:
            action(page, quoted(step))
    # Step 4's refusal is a 409 answer to the form's request, and Chromium logs every 4xx
    # resource as a console error: that one line, and nothing else, is expected.
    refused = [e for e in page.console_errors if "status of 409 (Conflict)" in e]
    assert len(refused) == 1, page.console_errors
    page.console_errors.remove(refused[0])
    assert_clean(page, reports)
