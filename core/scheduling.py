"""Cron arithmetic for schedules (croniter), kept out of import paths that do not need it."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from core.errors import DefinitionError


def check_cron(expression: str, timezone: str, *, where: str) -> None:
    """Raise ``DefinitionError`` when the cron expression or time zone is invalid."""
    from croniter import croniter

    if not croniter.is_valid(expression):
        raise DefinitionError(f"{where}: {expression!r} is not a valid cron expression")
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise DefinitionError(f"{where}: unknown time zone {timezone!r}") from None


def fire_times_between(
    expression: str, timezone: str, *, after: float, until: float
) -> list[float]:
    """Scheduled times in ``(after, until]`` as epoch seconds, oldest first."""
    from croniter import croniter

    zone = ZoneInfo(timezone)
    start = datetime.fromtimestamp(after, tz=UTC).astimezone(zone)
    iterator = croniter(expression, start)
    times: list[float] = []
    while True:
        moment = iterator.get_next(datetime)
        stamp = moment.timestamp()
        if stamp > until:
            return times
        times.append(stamp)


def iso_utc(epoch_seconds: float) -> str:
    """An epoch time as ``YYYY-MM-DDTHH:MM:SSZ`` (schedule run keys, API views)."""
    return datetime.fromtimestamp(epoch_seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
