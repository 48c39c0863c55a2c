"""The owner's rules as a pure function: (rules, readings, previous decision, local time)
→ decision. Hypothesis explores every combination; the hours are checked against an
independent minute-by-minute model of a week."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hydracompute.worker.hours import HoursWindow
from hydracompute.worker.rules import (
    SETTING_KEYS,
    Decision,
    InvalidRules,
    Readings,
    Rules,
    decide,
    read_rules_file,
    rules_from_values,
)

DOCS = Path(__file__).resolve().parent.parent / "docs"
MONDAY = datetime(2026, 11, 23)  # a Monday
#: The same examples on every run, whatever ran before (no example database).
SAME_EVERY_RUN = settings(derandomize=True, database=None)
WEEK_MIN = 7 * 1440

percent = st.floats(0, 100, allow_nan=False)
maybe = st.none


@st.composite
def windows(draw: st.DrawFn) -> str:
    days = draw(
        st.sampled_from(
            [
                "",
                "mon",
                "sat,sun",
                "mon-fri",
                "fri-mon",
                "weekdays",
                "weekends",
                "daily",
                "tue,thu-sat",
            ]
        )
    )
    start = draw(st.integers(0, 1439))
    end = draw(st.integers(1, 1440).filter(lambda e: e != start))
    span = f"{start // 60:02d}:{start % 60:02d}-{end // 60:02d}:{end % 60:02d}"
    whole_day = draw(st.booleans()) and days
    return days if whole_day else f"{days} {span}".strip()


@st.composite
def rule_values(draw: st.DrawFn) -> dict[str, Any]:
    """Any valid combination of settings (each present or not)."""
    values: dict[str, Any] = {}
    if draw(st.booleans()):
        values["cores"] = draw(st.integers(1, 64))
    if draw(st.booleans()):
        values["duty_percent"] = draw(st.floats(1, 100))
    if draw(st.booleans()):
        pause = draw(st.floats(1, 100))
        values["cpu_pause_percent"] = pause
        if draw(st.booleans()):
            values["cpu_resume_percent"] = draw(st.floats(0, pause, exclude_max=True))
    battery = draw(st.sampled_from(["default", "never", "always", "floor"]))
    if battery == "never":
        values["on_battery"] = False
    elif battery == "always":
        values["on_battery"] = True
    elif battery == "floor":
        values["min_battery_percent"] = draw(st.floats(1, 100))
    if draw(st.booleans()):
        hot = draw(st.floats(31, 120))
        values["max_temperature_c"] = hot
        if draw(st.booleans()):
            values["resume_temperature_c"] = draw(st.floats(20, hot, exclude_max=True))
    if draw(st.booleans()):
        values["max_memory_percent"] = draw(st.floats(10, 100))
    if draw(st.booleans()):
        values["max_compute_memory_mb"] = draw(st.floats(64, 65536))
    if draw(st.booleans()):
        values["hours"] = draw(st.lists(windows(), min_size=1, max_size=3))
    if draw(st.booleans()):
        values["input_idle_minutes"] = draw(st.floats(0.1, 1440))
    return values


readings_strategy = st.builds(
    Readings,
    other_cpu_percent=percent,
    on_battery=st.booleans(),
    battery_percent=maybe() | percent,
    temperature_c=maybe() | st.floats(-20, 130),
    memory_percent=percent,
    compute_memory_mb=st.floats(0, 100_000),
    input_idle_s=maybe() | st.floats(0, 200_000),
)
LATCHES = ("cpu", "battery", "temperature", "memory")
previous_strategy = st.none() | st.builds(
    lambda run, latched: Decision(run, () if run else ("earlier",), 1, 1.0, frozenset(latched)),
    st.booleans(),
    st.sets(st.sampled_from(LATCHES)),
)
moments = st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2040, 1, 1))

#: Settings that make up one rule; a rule alone is these on top of no limits at all.
RULE_GROUPS = {
    "hours": ("hours",),
    "battery": ("on_battery", "min_battery_percent"),
    "temperature": ("max_temperature_c", "resume_temperature_c"),
    "input": ("input_idle_minutes",),
    "memory": ("max_memory_percent",),
    "compute memory": ("max_compute_memory_mb",),
    "cpu": ("cpu_pause_percent", "cpu_resume_percent"),
}


def only(values: dict[str, Any], group: str) -> Rules:
    keys = RULE_GROUPS[group]
    return rules_from_values({k: v for k, v in values.items() if k in keys})


# --- the decision ---------------------------------------------------------------------------


@settings(SAME_EVERY_RUN, max_examples=1000)
@given(rule_values(), readings_strategy, previous_strategy, moments)
def test_a_decision_is_always_well_formed(
    values: dict[str, Any], readings: Readings, previous: Decision | None, now: datetime
) -> None:
    rules = rules_from_values(values, default_cores=8)
    decision = decide(rules, readings, previous, now)
    assert decision == decide(rules, readings, previous, now)  # a function of its inputs
    if decision.run:
        assert decision.reasons == () and not decision.return_now
        assert decision.cores == rules.cores == values.get("cores", 8)
        assert decision.duty == rules.duty_percent / 100
        assert (decision.reason == "") == (decision.duty == 1)
    else:
        assert decision.reasons and all(decision.reasons)
        assert (decision.cores, decision.duty) == (0, 0.0)
        assert decision.reason == "; ".join(decision.reasons)
    assert decision.latched <= set(LATCHES)


@settings(SAME_EVERY_RUN, max_examples=1000)
@given(rule_values(), readings_strategy, previous_strategy, moments)
def test_it_runs_exactly_when_every_rule_alone_would_let_it(
    values: dict[str, Any], readings: Readings, previous: Decision | None, now: datetime
) -> None:
    combined = decide(rules_from_values(values), readings, previous, now)
    alone = {g: decide(only(values, g), readings, previous, now) for g in RULE_GROUPS}
    assert combined.run == all(d.run for d in alone.values())
    # Each rule holding it back gives its own reason, in the combined decision too.
    assert sorted(combined.reasons) == sorted(r for d in alone.values() for r in d.reasons)
    assert combined.latched == frozenset().union(*(d.latched for d in alone.values()))
    assert combined.return_now == alone["compute memory"].return_now


#: Each rule, and a reading it lets through and one it stops.
LATTICE: dict[str, tuple[dict[str, Any], dict[str, Any], dict[str, Any]]] = {
    "hours": ({"hours": ["mon 09:00-17:00"]}, {"hour": 12}, {"hour": 20}),
    "battery": ({"on_battery": False}, {"on_battery": False}, {"on_battery": True}),
    "temperature": ({"max_temperature_c": 80}, {"temperature_c": 50.0}, {"temperature_c": 95.0}),
    "input": ({"input_idle_minutes": 5}, {"input_idle_s": 600.0}, {"input_idle_s": 10.0}),
    "memory": ({"max_memory_percent": 90}, {"memory_percent": 50.0}, {"memory_percent": 95.0}),
    "compute memory": (
        {"max_compute_memory_mb": 1000},
        {"compute_memory_mb": 100.0},
        {"compute_memory_mb": 2000.0},
    ),
    "cpu": ({"cpu_pause_percent": 30}, {"other_cpu_percent": 5.0}, {"other_cpu_percent": 60.0}),
}


def test_every_combination_of_rules_and_readings() -> None:
    """Exhaustively: each of the 2^7 sets of rules against each of the 2^7 ways the
    readings can break them; it runs exactly when no rule in force is broken."""
    names = list(LATTICE)
    subsets = [[n for i, n in enumerate(names) if mask >> i & 1] for mask in range(2**7)]
    rules_of = {
        tuple(on): rules_from_values({k: v for n in on for k, v in LATTICE[n][0].items()})
        for on in subsets
    }
    for broken in subsets:
        values: dict[str, Any] = {}
        for name in names:
            values |= LATTICE[name][2 if name in broken else 1]
        now = MONDAY.replace(hour=values.pop("hour"))
        readings = Readings(**values)
        for on, rules in rules_of.items():
            decision = decide(rules, readings, None, now)
            stopping = set(on) & set(broken)
            assert decision.run == (not stopping), (on, broken)
            assert len(decision.reasons) == len(stopping)
            assert decision.return_now == ("compute memory" in stopping)


@settings(SAME_EVERY_RUN)
@given(percent, percent, st.floats(1, 100), st.booleans())
def test_other_programs_cpu_with_hysteresis(
    other: float, resume_fraction: float, pause: float, was_held: bool
) -> None:
    resume = pause * resume_fraction / 100 * 0.999
    rules = rules_from_values({"cpu_pause_percent": pause, "cpu_resume_percent": resume})
    previous = Decision(not was_held, latched=frozenset({"cpu"} if was_held else ()))
    decision = decide(rules, Readings(other_cpu_percent=other), previous, MONDAY)
    if other > pause:
        assert not decision.run and "other programs use" in decision.reason
    elif other < resume:
        assert decision.run
    else:  # between the two thresholds: stay as it was
        assert decision.run == (not was_held)


@settings(SAME_EVERY_RUN)
@given(st.lists(percent, min_size=1, max_size=60), st.floats(2, 100), st.floats(0.05, 0.95))
def test_it_changes_its_mind_only_across_the_far_threshold(
    loads: list[float], pause: float, ratio: float
) -> None:
    rules = rules_from_values({"cpu_pause_percent": pause, "cpu_resume_percent": pause * ratio})
    decision: Decision | None = None
    for load in loads:
        new = decide(rules, Readings(other_cpu_percent=load), decision, MONDAY)
        running_before = True if decision is None else decision.run
        if running_before and not new.run:
            assert load > pause
        if not running_before and new.run:
            assert load < rules.cpu_resume
        decision = new


@settings(SAME_EVERY_RUN)
@given(st.booleans(), maybe() | percent, st.sampled_from(["default", "never", "floor"]), percent)
def test_battery(on_battery: bool, charge: float | None, rule: str, floor: float) -> None:
    floor = max(1.0, floor)
    values: dict[str, Any] = {
        "default": {},
        "never": {"on_battery": False},
        "floor": {"min_battery_percent": floor},
    }[rule]
    readings = Readings(on_battery=on_battery, battery_percent=charge)
    fresh = decide(rules_from_values(values), readings, None, MONDAY)
    if not on_battery or rule == "default":
        assert fresh.run  # on mains (or no battery) the battery never matters
    elif rule == "never":
        assert not fresh.run and fresh.reason == "on battery"
    else:
        assert fresh.run == (charge is None or charge >= floor)
        held = Decision(False, ("x",), latched=frozenset({"battery"}))
        again = decide(rules_from_values(values), readings, held, MONDAY)
        assert again.run == (charge is None or charge > floor + 5)


@settings(SAME_EVERY_RUN)
@given(maybe() | st.floats(-20, 130), st.floats(31, 120), st.booleans())
def test_temperature(temperature: float | None, hot: float, was_held: bool) -> None:
    rules = rules_from_values({"max_temperature_c": hot})
    previous = Decision(not was_held, latched=frozenset({"temperature"} if was_held else ()))
    decision = decide(rules, Readings(temperature_c=temperature), previous, MONDAY)
    if temperature is None:
        assert decision.run  # no sensor: the rule cannot hold it back
    elif temperature > hot:
        assert not decision.run and "°C" in decision.reason
    elif temperature < hot - 5:
        assert decision.run
    else:
        assert decision.run == (not was_held)


@settings(SAME_EVERY_RUN)
@given(maybe() | st.floats(0, 10_000), st.floats(0.1, 120))
def test_input_idle(idle_s: float | None, minutes: float) -> None:
    rules = rules_from_values({"input_idle_minutes": minutes})
    decision = decide(rules, Readings(input_idle_s=idle_s), None, MONDAY)
    assert decision.run == (idle_s is not None and idle_s >= minutes * 60)
    if idle_s is None:
        assert "unavailable" in decision.reason


@settings(SAME_EVERY_RUN)
@given(percent, st.floats(10, 100), st.booleans(), st.floats(0, 10_000), st.floats(64, 8192))
def test_memory(used: float, cap: float, was_held: bool, compute_mb: float, cap_mb: float) -> None:
    rules = rules_from_values({"max_memory_percent": cap})
    previous = Decision(not was_held, latched=frozenset({"memory"} if was_held else ()))
    decision = decide(rules, Readings(memory_percent=used), previous, MONDAY)
    if used > cap:
        assert not decision.run
    elif used < cap - 5:
        assert decision.run
    else:
        assert decision.run == (not was_held)
    capped = rules_from_values({"max_compute_memory_mb": cap_mb})
    over = decide(capped, Readings(compute_memory_mb=compute_mb), None, MONDAY)
    assert over.run == (compute_mb <= cap_mb)
    assert over.return_now == (compute_mb > cap_mb)  # suspended, it would keep the memory


# --- hours ----------------------------------------------------------------------------------


def allowed_minutes(window: HoursWindow) -> set[int]:
    """Minutes of the week (Monday 00:00 = 0) the window allows, counted one by one."""
    allowed = set()
    length = (window.end_min - window.start_min) % 1440 or 1440
    for day in window.days:
        first = day * 1440 + window.start_min
        allowed.update((first + i) % WEEK_MIN for i in range(length))
    return allowed


@settings(SAME_EVERY_RUN, max_examples=300)
@given(
    st.lists(windows(), min_size=1, max_size=3), st.integers(0, WEEK_MIN - 1), st.integers(0, 59)
)
def test_hours_match_a_minute_by_minute_model_of_the_week(
    texts: list[str], minute: int, second: int
) -> None:
    rules = rules_from_values({"hours": texts})
    now = MONDAY + timedelta(minutes=minute, seconds=second)
    expected = any(minute in allowed_minutes(w) for w in rules.hours)
    decision = decide(rules, Readings(), None, now)
    assert decision.run == expected
    if not expected:
        assert decision.reason.startswith("outside the allowed hours")


@pytest.mark.parametrize(
    ("text", "inside", "outside"),
    [
        ("22:00-07:00", ["mon 23:30", "tue 06:59", "sun 22:00"], ["mon 07:00", "wed 21:59"]),
        ("fri 22:00-07:00", ["fri 22:00", "sat 06:00"], ["sat 22:30", "fri 06:00"]),
        ("mon-fri 09:00-17:00", ["wed 12:00"], ["sat 12:00", "mon 17:00", "tue 08:59"]),
        ("fri-mon", ["sat 03:00", "mon 23:59", "fri 00:00"], ["tue 12:00", "thu 23:59"]),
        ("weekends 00:00-24:00", ["sun 23:59"], ["mon 00:00"]),
        ("Saturday 10:00-12:00", ["sat 11:00"], ["sun 11:00"]),
    ],
)
def test_hours_examples(text: str, inside: list[str], outside: list[str]) -> None:
    window = HoursWindow.parse(text)

    def at(moment: str) -> datetime:
        day, clock = moment.split()
        offset = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"].index(day)
        hours, minutes = map(int, clock.split(":"))
        return MONDAY + timedelta(days=offset, hours=hours, minutes=minutes)

    assert all(window.contains(at(m)) for m in inside)
    assert not any(window.contains(at(m)) for m in outside)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("08:00-08:00", "empty"),
        ("25:00-26:00", "not a time of day"),
        ("08:00", "span of time"),
        ("someday 08:00-09:00", "unknown day"),
        ("mon 08:00-09:00 extra", "[DAYS]"),
        ("8-9", "not a time"),
        ("24:00-08:00", "not a time of day"),
        ("08:61-09:00", "not a time of day"),
    ],
)
def test_bad_hours_are_refused(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("[", r"\[")):
        HoursWindow.parse(text)


# --- reading the rules ----------------------------------------------------------------------


def test_every_problem_is_named_at_once() -> None:
    with pytest.raises(InvalidRules) as caught:
        rules_from_values(
            {
                "cpu_pause": 30,
                "duty_percent": 0,
                "on_battery": "no",
                "hours": ["8-9"],
                "cores": 1.5,
                "priority": "lowest",
            },
            source="worker.toml",
        )
    problems = caught.value.problems
    assert problems[0] == "unknown setting 'cpu_pause' (did you mean 'cpu_pause_percent'?)"
    assert len(problems) == 6
    assert str(caught.value).startswith("worker.toml: ")
    assert caught.value.status == 422


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"cpu_resume_percent": 5}, "needs cpu_pause_percent"),
        ({"cpu_pause_percent": 20, "cpu_resume_percent": 20}, "below cpu_pause_percent"),
        ({"resume_temperature_c": 60}, "needs max_temperature_c"),
        ({"max_temperature_c": 80, "resume_temperature_c": 85}, "below max_temperature_c"),
        ({"on_battery": False, "min_battery_percent": 40}, "contradicts"),
        ({"duty_percent": float("nan")}, "must be a number"),
        ({"max_memory_percent": True}, "must be a number"),
        ({"hours": "mon"}, None),  # a single window is accepted as a string
    ],
)
def test_contradictions_and_types(values: dict[str, Any], message: str | None) -> None:
    if message is None:
        assert rules_from_values(values).hours[0].days == frozenset({0})
        return
    with pytest.raises(InvalidRules, match=message):
        rules_from_values(values)


def test_defaults_compute_everywhere_all_the_time_at_idle_priority() -> None:
    rules = rules_from_values({}, default_cores=6)
    assert rules == Rules(cores=6)
    assert (rules.duty_percent, rules.on_battery, rules.priority) == (100.0, True, "idle")
    assert rules.as_values() == {"cores": 6}
    floor = rules_from_values({"min_battery_percent": 30})
    assert floor.on_battery is True
    assert rules_from_values({"cpu_pause_percent": 40}).cpu_resume == 20


def test_a_toml_file(tmp_path: Path) -> None:
    path = tmp_path / "worker.toml"
    path.write_text('cpu_pause_percent = 30\nhours = ["mon-fri 18:00-08:00", "weekends"]\n')
    rules = rules_from_values(read_rules_file(path), source=str(path))
    assert rules.cpu_pause_percent == 30.0
    assert [w.text for w in rules.hours] == ["mon-fri 18:00-08:00", "weekends"]
    path.write_text("cpu_pause_percent = \n")
    with pytest.raises(InvalidRules, match="not valid TOML") as caught:
        read_rules_file(path)
    assert str(path) in str(caught.value)
    with pytest.raises(InvalidRules, match="cannot read"):
        read_rules_file(tmp_path / "missing.toml")


def test_the_example_file_is_valid_and_the_docs_name_every_setting() -> None:
    example = read_rules_file(DOCS / "worker.example.toml")
    rules = rules_from_values(example)
    assert rules.cpu_pause_percent is not None and not rules.on_battery
    assert set(example) <= set(SETTING_KEYS)
    manual = (DOCS / "worker.md").read_text()
    assert all(f"`{key}`" in manual for key in SETTING_KEYS)
    assert all(f"--{key.replace('_', '-')}" in manual for key in SETTING_KEYS)


def test_rules_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Rules().cores = 3  # type: ignore[misc]
