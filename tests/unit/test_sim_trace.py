"""Trace parsing (CSV rows, Azure per-minute counts) and the stated spreading rule."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from allinone.simulator.trace import (
    DurationDist,
    Trace,
    TraceError,
    load,
    read_azure,
    read_csv,
    spread_minute_counts,
)


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_csv_sorted_by_arrival_in_seconds(tmp_path: Path) -> None:
    p = write(tmp_path, "t.csv", "function,arrival_ms,duration_ms\n"
              "b,2000,10\na,500,1.5\nb,500,3\n")
    t = read_csv(p)
    assert t.functions == ["b", "a"]
    assert t.arrival == [0.5, 0.5, 2.0]
    # equal arrivals keep file order: a (row 3) before b (row 4)
    assert [t.functions[i] for i in t.fn] == ["a", "b", "b"]
    assert t.duration == [0.0015, 0.003, 0.01]
    assert t.counts() == {"b": 2, "a": 1}


def test_csv_round_trip(tmp_path: Path) -> None:
    t = Trace.from_rows([("x", 1.25, 0.1), ("y", 0.0, 0.002)])
    t.write_csv(tmp_path / "o.csv")
    back = read_csv(tmp_path / "o.csv")
    assert list(back.rows()) == list(t.rows())


@pytest.mark.parametrize(("body", "words"), [
    ("function,arrival\nf,1\n", ["row 1", "missing column", "duration_ms"]),
    ("function,arrival_ms,duration_ms\nf,1,2\n,3,4\n", ["row 3", "'function'", "empty"]),
    ("function,arrival_ms,duration_ms\nf,abc,2\n", ["row 2", "'arrival_ms'", "'abc'"]),
    ("function,arrival_ms,duration_ms\nf,1,-2\n", ["row 2", "'duration_ms'", ">= 0"]),
    ("function,arrival_ms,duration_ms\nf,1,inf\n", ["row 2", "'duration_ms'", "finite"]),
    ("function,arrival_ms,duration_ms\nf,1\n", ["row 2", "'duration_ms'", "empty"]),
])
def test_csv_bad_input_names_row_and_column(tmp_path: Path, body: str, words: list[str]) -> None:
    p = write(tmp_path, "bad.csv", body)
    with pytest.raises(TraceError) as err:
        read_csv(p)
    for w in words:
        assert w in str(err.value)
    assert str(p) in str(err.value)


def test_missing_file_is_a_trace_error(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match="cannot read trace"):
        load(tmp_path / "nope.csv")


def azure(minutes: int, rows: list[tuple[str, list[int]]]) -> str:
    head = "HashOwner,HashApp,HashFunction,Trigger," + ",".join(
        str(m) for m in range(1, minutes + 1))
    lines = [head] + [f"o,a,{name},http," + ",".join(map(str, counts)) for name, counts in rows]
    return "\n".join(lines) + "\n"


def test_azure_counts_spread_within_their_minutes(tmp_path: Path) -> None:
    p = write(tmp_path, "inv.csv", azure(3, [("f1", [2, 0, 3]), ("f2", [0, 1, 0])]))
    t = read_azure(p, duration_ms=250, seed=7)
    per = {name: [] for name in t.functions}
    for name, at, dur in t.rows():
        per[name].append(at)
        assert dur == 0.25
    assert len(per["f1"]) == 5 and len(per["f2"]) == 1
    assert sum(1 for a in per["f1"] if 0 <= a < 60) == 2
    assert sum(1 for a in per["f1"] if 120 <= a < 180) == 3
    assert 60 <= per["f2"][0] < 120
    assert t.arrival == sorted(t.arrival)


def test_azure_spreading_is_the_stated_rule_and_seeded(tmp_path: Path) -> None:
    p = write(tmp_path, "inv.csv", azure(2, [("f1", [2, 1])]))
    t = read_azure(p, duration_ms=1, seed=3)
    rng = random.Random("3/f1")
    first = sorted(rng.random() * 60 for _ in range(2))
    second = [60 + rng.random() * 60]
    assert t.arrival == first + second
    assert read_azure(p, duration_ms=1, seed=3).arrival == t.arrival
    assert read_azure(p, duration_ms=1, seed=4).arrival != t.arrival


def test_adding_a_function_does_not_move_another(tmp_path: Path) -> None:
    one = read_azure(write(tmp_path, "a.csv", azure(2, [("f1", [4, 4])])), duration_ms=1)
    two = read_azure(write(tmp_path, "b.csv", azure(2, [("f0", [9, 9]), ("f1", [4, 4])])),
                     duration_ms=1)
    assert [a for n, a, _ in two.rows() if n == "f1"] == one.arrival


def test_azure_duplicate_functions_add_up(tmp_path: Path) -> None:
    p = write(tmp_path, "inv.csv", azure(1, [("f1", [2]), ("f1", [3])]))
    assert read_azure(p, duration_ms=1).counts() == {"f1": 5}


def test_azure_durations_file_with_percentiles(tmp_path: Path) -> None:
    inv = write(tmp_path, "inv.csv", azure(1, [("f1", [200])]))
    dur = write(tmp_path, "dur.csv",
                "HashOwner,HashApp,HashFunction,Average,Count,Minimum,Maximum,"
                "percentile_Average_0,percentile_Average_1,percentile_Average_25,"
                "percentile_Average_50,percentile_Average_75,percentile_Average_99,"
                "percentile_Average_100\n"
                "o,a,f1,100,5,10,1000,10,20,50,100,150,900,1000\n")
    t = load(inv, durations=dur)
    ms = sorted(d * 1000 for d in t.duration)
    assert ms[0] >= 10 and ms[-1] <= 1000
    assert 60 < ms[len(ms) // 2] < 140  # median near p50 = 100


def test_quantile_draw_interpolates() -> None:
    d = DurationDist(5, ((0.0, 0.0), (0.5, 10.0), (1.0, 30.0)))

    class Fixed(random.Random):
        def __init__(self, u: float) -> None:
            super().__init__()
            self.u = u

        def random(self) -> float:
            return self.u

    assert d.draw(Fixed(0.25)) == pytest.approx(5.0)
    assert d.draw(Fixed(0.75)) == pytest.approx(20.0)
    assert DurationDist(7.0).draw(random.Random(1)) == 7.0


def test_azure_function_without_durations_is_named(tmp_path: Path) -> None:
    inv = write(tmp_path, "inv.csv", azure(1, [("f1", [1]), ("f2", [1])]))
    dur = write(tmp_path, "dur.csv", "HashFunction,Average\nf1,10\n")
    with pytest.raises(TraceError, match="'f2'"):
        read_azure(inv, durations=dur)
    t = read_azure(inv, durations=dur, duration_ms=30)  # the fallback fills the gap
    assert sorted(round(d, 6) for d in t.duration) == [0.01, 0.03]


@pytest.mark.parametrize(("body", "words"), [
    ("HashFunction,1,2\nf,1,x\n", ["row 2", "column '2'", "'x'"]),
    ("HashFunction,1,2\nf,1,-1\n", ["row 2", "column '2'"]),
    ("HashFunction,1,3\nf,1,1\n", ["row 1", "without gaps"]),
    ("HashFunction,1\n,1\n", ["row 2", "'HashFunction'", "empty"]),
])
def test_azure_bad_input(tmp_path: Path, body: str, words: list[str]) -> None:
    p = write(tmp_path, "bad.csv", body)
    with pytest.raises(TraceError) as err:
        read_azure(p, duration_ms=1)
    for w in words:
        assert w in str(err.value)


def test_azure_needs_durations(tmp_path: Path) -> None:
    p = write(tmp_path, "inv.csv", azure(1, [("f1", [1])]))
    with pytest.raises(TraceError, match="needs durations"):
        load(p)


def test_unknown_header(tmp_path: Path) -> None:
    p = write(tmp_path, "x.csv", "a,b,c\n1,2,3\n")
    with pytest.raises(TraceError, match="row 1"):
        load(p)


def test_spread_skips_empty_minutes() -> None:
    out = spread_minute_counts("f", [0, 0, 1], DurationDist(1.0), 0)
    assert len(out) == 1 and 120 <= out[0][0] < 180 and out[0][1] == 0.001
