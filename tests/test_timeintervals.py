"""Recurring time windows that mute routes (`[[time_intervals]]`, `mute_during`)."""

from __future__ import annotations

import pytest

from alertd.model import parse_rfc3339
from alertd.settings import TimeIntervalSettings
from alertd.timeintervals import TimeInterval, muted

# 2026-11-23 is a Monday; Europe/Berlin is UTC+1 in November, UTC+2 in July.
WEEK = {
    "monday": "2026-11-23",
    "tuesday": "2026-11-24",
    "wednesday": "2026-11-25",
    "thursday": "2026-11-26",
    "friday": "2026-11-27",
    "saturday": "2026-11-28",
    "sunday": "2026-11-29",
}


def at(text: str) -> float:
    return parse_rfc3339(text)


def noon(day: str) -> float:
    return at(f"{WEEK[day]}T12:00:00Z")


def interval(
    weekdays: list[str] | None = None, times: list[str] | None = None, timezone: str = "UTC"
) -> TimeInterval:
    return TimeInterval(
        TimeIntervalSettings(
            name="window", weekdays=weekdays or [], times=times or [], timezone=timezone
        )
    )


class TestWeekdays:
    """A window holds only on the days it lists."""

    def test_named_days(self) -> None:
        """`["saturday", "sunday"]` is the weekend and nothing else."""
        weekend = interval(weekdays=["saturday", "sunday"])
        actual = {day: weekend.contains(noon(day)) for day in WEEK}
        expected = {day: day in ("saturday", "sunday") for day in WEEK}
        assert expected == actual

    @pytest.mark.parametrize("day", list(WEEK))
    def test_inclusive_range(self, day: str) -> None:
        """`monday:friday` includes both ends and excludes the weekend."""
        workdays = interval(weekdays=["monday:friday"])
        assert (day not in ("saturday", "sunday")) == workdays.contains(noon(day))

    def test_range_wrapping_the_week(self) -> None:
        """`saturday:monday` is Saturday, Sunday and Monday."""
        long_weekend = interval(weekdays=["saturday:monday"])
        actual = {day for day in WEEK if long_weekend.contains(noon(day))}
        assert {"saturday", "sunday", "monday"} == actual

    def test_names_and_ranges_mixed_any_case(self) -> None:
        """Entries combine, and day names are not case-sensitive."""
        days = interval(weekdays=["Monday", "wednesday:Thursday"])
        actual = {day for day in WEEK if days.contains(noon(day))}
        assert {"monday", "wednesday", "thursday"} == actual

    def test_no_weekdays_means_every_day(self) -> None:
        """An empty `weekdays` list holds on all seven days."""
        every_day = interval(times=["11:00-13:00"])
        assert all(every_day.contains(noon(day)) for day in WEEK)


class TestTimes:
    """A window holds from its start minute up to, not including, its end."""

    @pytest.mark.parametrize(
        ("clock", "expected"),
        [
            ("08:59:59", False),
            ("09:00:00", True),
            ("12:30:00", True),
            ("16:59:59", True),
            ("17:00:00", False),
        ],
    )
    def test_start_inclusive_end_exclusive(self, clock: str, expected: bool) -> None:
        """09:00-17:00 holds at 09:00 and at 16:59:59, not at 17:00."""
        office = interval(times=["09:00-17:00"])
        assert expected == office.contains(at(f"2026-11-23T{clock}Z"))

    def test_end_of_day_is_24_00(self) -> None:
        """22:00-24:00 holds until midnight and not after it."""
        late = interval(times=["22:00-24:00"])
        assert late.contains(at("2026-11-23T23:59:59Z"))
        assert not late.contains(at("2026-11-24T00:00:00Z"))

    def test_whole_day(self) -> None:
        """00:00-24:00 holds at every minute."""
        whole = interval(times=["00:00-24:00"])
        assert whole.contains(at("2026-11-23T00:00:00Z"))
        assert whole.contains(at("2026-11-23T23:59:59Z"))

    def test_several_ranges(self) -> None:
        """Any of several ranges is enough."""
        split = interval(times=["00:00-06:00", "20:00-24:00"])
        actual = [split.contains(at(f"2026-11-23T{hh}:00:00Z")) for hh in ("05", "12", "21")]
        assert [True, False, True] == actual

    def test_no_times_means_all_day(self) -> None:
        """An empty `times` list holds all day on the listed days."""
        monday = interval(weekdays=["monday"])
        assert monday.contains(at("2026-11-23T00:00:00Z"))
        assert monday.contains(at("2026-11-23T23:59:59Z"))
        assert not monday.contains(at("2026-11-24T00:00:00Z"))

    def test_empty_interval_always_holds(self) -> None:
        """No weekdays and no times: the window is always on."""
        assert interval().contains(at("2026-11-25T03:17:00Z"))


class TestTimezones:
    """Days and times are read in the window's own timezone."""

    def test_berlin_weekend_starts_before_utc_midnight(self) -> None:
        """Friday 23:30 UTC is already Saturday 00:30 in Berlin."""
        friday_late_utc = at("2026-11-27T23:30:00Z")
        berlin = interval(weekdays=["saturday", "sunday"], timezone="Europe/Berlin")
        utc = interval(weekdays=["saturday", "sunday"], timezone="UTC")
        assert (True, False) == (berlin.contains(friday_late_utc), utc.contains(friday_late_utc))

    def test_berlin_weekend_ends_before_utc_midnight(self) -> None:
        """Sunday 23:30 UTC is already Monday in Berlin."""
        sunday_late_utc = at("2026-11-29T23:30:00Z")
        berlin = interval(weekdays=["saturday", "sunday"], timezone="Europe/Berlin")
        utc = interval(weekdays=["saturday", "sunday"], timezone="UTC")
        assert (False, True) == (berlin.contains(sunday_late_utc), utc.contains(sunday_late_utc))

    def test_times_follow_daylight_saving(self) -> None:
        """09:00-17:00 Berlin is 08:00-16:00 UTC in winter and 07:00-15:00 UTC in summer."""
        office = interval(times=["09:00-17:00"], timezone="Europe/Berlin")
        winter = [office.contains(at(f"2026-11-23T{t}Z")) for t in ("07:30:00", "08:00:00")]
        summer = [office.contains(at(f"2026-07-06T{t}Z")) for t in ("06:59:00", "07:00:00")]
        assert ([False, True], [False, True]) == (winter, summer)

    def test_weekday_and_time_together_in_zone(self) -> None:
        """Day and minute are both local: Monday 00:30 Berlin is Sunday 23:30 UTC."""
        monday_night = interval(
            weekdays=["monday"], times=["00:00-01:00"], timezone="Europe/Berlin"
        )
        assert monday_night.contains(at("2026-11-29T23:30:00Z"))
        assert not monday_night.contains(at("2026-11-23T00:30:00Z"))


class TestMuted:
    """A route is muted while any interval it names holds."""

    def test_any_named_interval(self) -> None:
        """One holding interval among several is enough."""
        intervals = {
            "weekend": interval(weekdays=["saturday", "sunday"]),
            "night": interval(times=["00:00-06:00"]),
        }
        monday_night = at("2026-11-23T03:00:00Z")
        monday_noon = noon("monday")
        assert muted(["weekend", "night"], intervals, monday_night)
        assert not muted(["weekend", "night"], intervals, monday_noon)
        assert not muted(["weekend"], intervals, monday_night)

    def test_unknown_names_are_ignored(self) -> None:
        """A name with no interval mutes nothing (config check reports it)."""
        intervals = {"weekend": interval(weekdays=["saturday", "sunday"])}
        assert not muted(["holidays"], intervals, noon("monday"))
        assert muted(["holidays", "weekend"], intervals, noon("sunday"))

    def test_no_names(self) -> None:
        """A route without `mute_during` is never muted."""
        assert not muted([], {"always": interval()}, noon("monday"))

    def test_interval_keeps_its_name(self) -> None:
        """The interval answers to the name it was configured with."""
        assert "window" == interval().name
