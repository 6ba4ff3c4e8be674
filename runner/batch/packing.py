"""Which jobs share which rental: longest first onto the least-loaded rental (LPT, Graham 1969).

Pure: seconds in, shares out. LPT's makespan is at most 4/3 of the optimum, and when one job is longer than the
rest put together on a rental it is exactly that job's time — the batch's wall time stays close to its longest job.
Ties keep the caller's order (a stable sort), so the same batch packs the same way every time."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Share:
    """One rental's jobs (indices into the caller's list), in the order it runs them, and their total seconds."""

    jobs: tuple[int, ...]
    seconds: float


def pack(seconds: list[float], rentals: int, *, startup: float = 0.0) -> tuple[Share, ...]:
    """Spread jobs of the given durations over at most `rentals` rentals. `startup` is what each rental costs
    before its first job (boot, image pull): it counts once per rental, so an empty rental starts at zero load
    and a used one at `startup`. Never more rentals than jobs; empty rentals are left out."""
    if rentals < 1:
        raise ValueError(f"rentals must be at least 1, got {rentals}")
    if any(s < 0 for s in seconds):
        raise ValueError("job durations must not be negative")
    count = min(rentals, len(seconds))
    loads = [0.0] * count
    shares: list[list[int]] = [[] for _ in range(count)]
    for index in sorted(range(len(seconds)), key=lambda i: -seconds[i]):
        # The least-loaded rental; an unused one counts its start-up as well. Ties: the lowest rental number.
        target = min(range(count), key=lambda r: (loads[r] + (0.0 if shares[r] else startup), r))
        if not shares[target]:
            loads[target] += startup
        shares[target].append(index)
        loads[target] += seconds[index]
    return tuple(Share(jobs=tuple(s), seconds=load) for s, load in zip(shares, loads) if s)


def wall_seconds(shares: tuple[Share, ...]) -> float:
    """The batch's predicted wall time: its busiest rental."""
    return max((s.seconds for s in shares), default=0.0)


def least_loaded(loads: dict[int, float], exclude: frozenset[int] = frozenset()) -> int | None:
    """The rental a moved job goes to: the least-loaded one still usable (ties: the lowest number)."""
    usable = [r for r in loads if r not in exclude]
    return min(usable, key=lambda r: (loads[r], r)) if usable else None
