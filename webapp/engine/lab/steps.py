"""What the lab's scenarios tell of one host: did what h1 sent reach it, and was that right?"""

from typing import Any


def reached(sender) -> set[str]:
    """The ids of the workers that `sender`'s datagram reached (none if it sent nothing)."""
    sent = next((e for e in sender.history if e.type == "sent"), None)
    return set(sent.reached) if sent else set()


def reach_step(lab, host: str, got: bool, step: str, why_same: str, why_far: str) -> dict[str, Any]:
    """A scenario step for `host`: it should get what h1 sent exactly when it is on h1's
    subnet; `why_same` or `why_far` says why."""
    same = lab.host(host).subnet == lab.host("h1").subnet
    return {"step": step, "outcome": "received it" if got else "did not receive it",
            "ok": got == same, "why": why_same if same else why_far}
