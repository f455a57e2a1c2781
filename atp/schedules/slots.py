"""When a schedule runs: its slots, from a cron in a time zone or an interval on the epoch.

Cron expressions are parsed and stepped by cronsim over *naive wall-clock* times, with no
time zone at all; this module alone turns each wall-clock time into an instant, by ATP's
rules for daylight saving time (cronsim's own handling follows Debian cron, which
runs wildcard jobs twice in a repeated hour):

- a wall-clock time that does not exist (the clocks jump forward over it) runs once, at
  the first valid instant after it: the instant of the jump;
- a wall-clock time that occurs twice (the clocks fall back) runs once, at its first
  occurrence.

Several wall-clock times may map to the same instant (every time in a skipped hour maps to
its end); a slot is an instant, so they make one slot. ``every`` slots are whole multiples
of the interval since the Unix epoch, the same on every host and in every time zone.
"""

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from cronsim import CronSim, CronSimError

from atp.exceptions import InvalidInput

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

#: The aliases cron accepts for common expressions (cronsim knows only the five fields).
ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

#: How far a wall-clock time may lie after the wall-clock time of an instant and still map
#: to an instant before it: at most the size of a repeated stretch of local time (an hour
#: for DST, two in a few zones' history); iterating backwards starts this much later.
FOLD_MARGIN = timedelta(hours=3)


def expand_cron(cron: str) -> str:
    """The five-field form of ``cron`` (aliases replaced); InvalidInput if it is not one."""
    if not isinstance(cron, str) or not cron.strip():
        raise InvalidInput(f"cron must be a non-empty string, not {cron!r}")
    text = " ".join(cron.split())
    text = ALIASES.get(text.lower(), text)
    if len(text.split()) != 5:
        raise InvalidInput(
            f"cron {cron!r} must have five fields (minute hour day month weekday) "
            f"or be one of {', '.join(ALIASES)}"
        )
    try:
        CronSim(text, datetime(2000, 1, 1))
    except CronSimError as exc:
        raise InvalidInput(f"cron {cron!r} is malformed: {exc}") from None
    return text


def zone(name: str) -> ZoneInfo:
    """The IANA time zone ``name``; InvalidInput if there is none of that name."""
    if not isinstance(name, str) or not name:
        raise InvalidInput(f"timezone must be an IANA time zone name, not {name!r}")
    try:
        return ZoneInfo(name)
    except (ValueError, OSError, LookupError) as exc:  # ZoneInfoNotFoundError is a KeyError
        raise InvalidInput(f"timezone {name!r} is not a known IANA time zone: {exc}") from None


def instant(wall: datetime, tz: ZoneInfo) -> datetime:
    """The UTC instant a naive wall-clock time of zone ``tz`` runs at (see module rules)."""
    first = wall.replace(tzinfo=tz, fold=0)
    as_utc = first.astimezone(UTC)
    if as_utc.astimezone(tz).replace(tzinfo=None) == wall:
        return as_utc  # exists; fold=0 is the first occurrence of a repeated time
    # In a gap, fold=0 applies the offset from before the jump and fold=1 the one after:
    # the two instants bracket the jump. The first instant whose wall-clock time is past
    # ``wall`` is the jump itself; wall-clock time only rises across a gap, so bisect.
    low, high = sorted((as_utc, wall.replace(tzinfo=tz, fold=1).astimezone(UTC)))
    low_s, high_s = int(low.timestamp()), int(high.timestamp()) + 1
    while high_s - low_s > 1:
        middle = (low_s + high_s) // 2
        local = datetime.fromtimestamp(middle, tz).replace(tzinfo=None)
        if local >= wall:
            high_s = middle
        else:
            low_s = middle
    return datetime.fromtimestamp(high_s, UTC)


def _wall(moment: datetime, tz: ZoneInfo) -> datetime:
    return moment.astimezone(tz).replace(tzinfo=None)


def timing_of(schedule) -> "Timing":
    """The timing of a Schedule row."""
    return Timing(cron=schedule.cron, every=schedule.every, timezone=schedule.timezone)


@dataclass(frozen=True)
class Timing:
    """A schedule's timing: ``cron`` (five fields) in ``timezone``, or ``every`` seconds."""

    cron: str = ""
    every: int | None = None
    timezone: str = "UTC"

    def after(self, moment: datetime) -> Iterator[datetime]:
        """The slots strictly after ``moment``, in order (UTC instants)."""
        if self.every is not None:
            step = timedelta(seconds=self.every)
            slot = EPOCH + step * ((moment - EPOCH) // step + 1)
            while True:
                yield slot
                slot += step
        tz = zone(self.timezone)
        last = moment
        # A wall-clock time before the moment's own maps to an instant before the moment
        # (the mapping never goes backwards), so stepping starts there. cronsim stops by
        # itself when nothing matches within 50 years.
        for wall in CronSim(self.cron, _wall(moment, tz)):
            slot = instant(wall, tz)
            if slot > last:
                last = slot
                yield slot

    def latest(self, after: datetime, until: datetime, limit: int) -> tuple[list, bool]:
        """The latest ``limit`` slots in ``(after, until]``, oldest first, and whether
        older slots in that range were left out.

        Backwards from ``until``, so a gap of a year costs no more than one of a minute.
        """
        if self.every is not None:
            step = timedelta(seconds=self.every)
            first, last = (after - EPOCH) // step + 1, (until - EPOCH) // step
            start = max(first, last - limit + 1)
            return [EPOCH + step * k for k in range(start, last + 1)], start > first
        tz = zone(self.timezone)
        found: list[datetime] = []
        # Backwards from a little past ``until``: a repeated wall-clock time later than
        # ``until``'s own may still map (to its first occurrence) to an instant before it.
        for wall in CronSim(self.cron, _wall(until, tz) + FOLD_MARGIN, reverse=True):
            slot = instant(wall, tz)
            if slot > until or (found and slot == found[-1]):
                continue
            if slot <= after:
                return found[::-1], False
            if len(found) == limit:
                return found[::-1], True
            found.append(slot)
        return found[::-1], False
