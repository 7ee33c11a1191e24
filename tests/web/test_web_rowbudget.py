"""The page log's row budget per worker (issue 17), driven with explicit times: a burst, then
the rate; each worker its own; a bucket left alone until full is forgotten, and a forgotten
worker gets exactly what a new one would."""

from webapp.web.stream import RowBudget


def test_a_burst_then_the_rate_per_worker():
    budget = RowBudget(rate=200, burst=25)
    assert budget.take({"a": 60, "b": 1}, now=10.0) == {"a": 25, "b": 1}
    # 1/16 s later: a has earned 12.5 rows, b still has 24 and takes its 1
    assert budget.take({"a": 60, "b": 1}, now=10.0625) == {"a": 12, "b": 1}
    # a steady flood for a second: 200 rows, about 10 a 50 ms flush
    granted = [budget.take({"a": 50}, now=10.0625 + 0.05 * n)["a"] for n in range(1, 21)]
    assert sum(granted) in range(199, 202) and max(granted) <= 11, granted


def test_a_bucket_left_alone_until_full_is_forgotten_and_starts_full():
    budget = RowBudget(rate=200, burst=25)
    budget.take({"gone": 100, "busy": 100}, now=0.0)
    budget.take({"busy": 100}, now=0.1)  # 0.1 s: "gone" is not full yet (20 of 25)
    assert set(budget.buckets) == {"gone", "busy"}
    assert budget.take({"busy": 100}, now=0.2) == {"busy": 20}
    assert set(budget.buckets) == {"busy"}  # 0.2 s >= 25 / 200 s since "gone" was used
    assert budget.take({"gone": 100}, now=0.2) == {"gone": 25}


def test_no_rate_lists_the_burst_once_and_forgets_nothing():
    budget = RowBudget(rate=0, burst=5)
    assert budget.take({"a": 9}, now=0.0) == {"a": 5}
    assert budget.take({"a": 9}, now=100.0) == {"a": 0}
