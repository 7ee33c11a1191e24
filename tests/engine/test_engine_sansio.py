"""The engine's logic without I/O: backoff schedules, attempts and the server's responder.

No sockets and no event loop: time is a number passed in as `now`, as in sans-I/O libraries.
"""

import pytest

from webapp.engine.backoff import Attempt, Backoff
from webapp.engine.workers.server import Responder

BOOK_DELAYS = [0.1, 0.2, 0.4, 0.8, 1.6]


# --- Backoff -------------------------------------------------------------------------


def test_default_backoff_is_the_books():
    assert Backoff().delays() == BOOK_DELAYS


@pytest.mark.parametrize(
    ("backoff", "expected"),
    [
        (Backoff(0.5, 3.0, 5.0), [0.5, 1.5, 4.5]),
        (Backoff(0.02, 2.0, 0.1), [0.02, 0.04, 0.08]),
        (Backoff(1.0, 10.0, 100.0), [1.0, 10.0, 100.0]),  # give_up_after itself is allowed
        (Backoff(0.1, 2.0, 1.6), BOOK_DELAYS),  # ... also when it is reached by doubling
        (Backoff(3.0, 2.0, 2.0), []),  # the first wait is already too long
    ],
)
def test_custom_backoff(backoff, expected):
    assert backoff.delays() == pytest.approx(expected)


def test_backoff_without_growth_is_bounded():
    # factor 1 is a valid spec (`backoff` may be 1: retry at the same pace): the schedule never
    # passes give_up_after, so delays() must stop somewhere rather than loop forever.
    delays = Backoff(0.1, 1.0, 2.0).delays()
    assert 0 < len(delays) <= 1000
    assert set(delays) == {0.1}


def test_backoff_is_frozen():
    with pytest.raises(AttributeError):
        Backoff().initial = 1.0  # type: ignore[misc]


# --- Attempt (fake clock) ------------------------------------------------------------


def test_attempt_first_wait():
    attempt = Attempt(Backoff(), now=100.0)
    assert attempt.tries == 1
    assert attempt.delay == 0.1
    assert attempt.deadline == pytest.approx(100.1)
    assert attempt.remaining(100.0) == pytest.approx(0.1)
    assert attempt.remaining(100.04) == pytest.approx(0.06)
    assert attempt.remaining(500.0) == 0.0  # never negative
    assert not attempt.expired(100.0)
    assert not attempt.expired(100.099)
    assert attempt.expired(100.1)
    assert attempt.expired(101.0)


def test_attempt_retry_starts_the_next_wait_at_now():
    attempt = Attempt(Backoff(), now=0.0)
    # the timeout is noticed a little late: the next wait counts from then, not the old deadline
    assert attempt.retry(0.15) == pytest.approx(0.2)
    assert attempt.tries == 2
    assert attempt.deadline == pytest.approx(0.35)
    assert not attempt.expired(0.34)
    assert attempt.expired(0.35)


def test_attempt_follows_the_book_then_gives_up():
    """Listing 2-2: wait 0.1, 0.2, 0.4, 0.8, 1.6 s, then 'I think the server is down'."""
    now = 10.0
    attempt = Attempt(Backoff(), now)
    waits = [attempt.delay]
    for _ in range(20):  # bounded: the book gives up after five waits
        now = attempt.deadline
        assert attempt.expired(now)
        delay = attempt.retry(now)
        if delay is None:
            break
        waits.append(delay)
    assert waits == pytest.approx(BOOK_DELAYS)
    assert attempt.tries == 5
    assert now == pytest.approx(10.0 + sum(BOOK_DELAYS))  # gave up once the 1.6 s wait ended
    # giving up changes nothing, and asking again still gives up
    assert attempt.delay == pytest.approx(1.6)
    assert attempt.retry(now) is None
    assert attempt.tries == 5


def test_attempt_with_custom_backoff():
    attempt = Attempt(Backoff(0.5, 3.0, 5.0), now=0.0)
    assert [attempt.retry(1.0), attempt.retry(3.0), attempt.retry(8.0)] == pytest.approx(
        [1.5, 4.5, None]
    )
    assert attempt.tries == 3


def test_attempt_may_wait_exactly_give_up_after():
    attempt = Attempt(Backoff(1.0, 10.0, 100.0), now=0.0)
    assert attempt.retry(1.0) == 10.0
    assert attempt.retry(11.0) == 100.0  # equal to give_up_after: still allowed
    assert attempt.retry(111.0) is None
    assert attempt.tries == 3


# --- Responder -----------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 12, 1000])
def test_length_reply_is_the_books(size):
    reply = Responder("length", 0.0, None).answer(b"x" * size)
    assert reply == f"Your data was {size} bytes long".encode("ascii")


def test_echo_reply_returns_the_same_bytes():
    data = bytes(range(256))
    assert Responder("echo", 0.0, None).answer(data) == data


def test_no_reply():
    assert Responder("none", 0.0, None).answer(b"hello") is None


def test_drop_rate_zero_never_drops():
    responder = Responder("length", 0.0, 1)
    assert not any(responder.drops() for _ in range(2000))


def test_drop_rate_one_always_drops():
    responder = Responder("length", 1.0, 1)
    assert all(responder.drops() for _ in range(2000))


def drop_pattern(seed: int, n: int = 64, rate: float = 0.5) -> list[bool]:
    responder = Responder("length", rate, seed)
    return [responder.drops() for _ in range(n)]


def test_a_seed_gives_the_same_drops_every_time():
    first = drop_pattern(7)
    assert first == drop_pattern(7)
    assert any(first) and not all(first)  # a real mix, not a constant


def test_another_seed_gives_other_drops():
    assert drop_pattern(7) != drop_pattern(8)


def test_half_the_requests_are_dropped():
    drops = drop_pattern(12345, n=2000)
    assert 0.45 < sum(drops) / len(drops) < 0.55
