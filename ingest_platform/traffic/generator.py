"""Synthetic listening traffic for the dev stack and benchmarks.

Users listen in sessions to tracks whose popularity follows a Zipf-like law (a few hits, a long
tail); about 1% of events carry a value-level defect so the dead-letter path is exercised too.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

import httpx

from ingest_platform.contract import Action, FeedbackType


@dataclass
class Catalogue:
    users: int = 1_000
    tracks: int = 5_000
    recommendations: int = 20_000
    seed: int = 7
    rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self._track_weights = [1 / (rank + 1) for rank in range(self.tracks)]

    def user_id(self) -> str:
        return f"u{self.rng.randrange(self.users)}"

    def track_id(self) -> str:
        return f"t{self.rng.choices(range(self.tracks), weights=self._track_weights)[0]}"


@dataclass
class TrafficGenerator:
    catalogue: Catalogue = field(default_factory=Catalogue)
    invalid_ratio: float = 0.01
    feedback_ratio: float = 0.1
    _sessions: dict[str, tuple[str, int]] = field(default_factory=dict)

    def event(self) -> dict:
        rng = self.catalogue.rng
        now = datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        user = self.catalogue.user_id()
        if rng.random() < self.feedback_ratio:
            kind = rng.choice(list(FeedbackType))
            rating = float(rng.randint(1, 5)) if kind is FeedbackType.EXPLICIT else float(rng.random() < 0.6)
            return {"feedback_event": {"user_id": user, "recommendation_id": f"r{rng.randrange(self.catalogue.recommendations)}",
                                       "feedback_type": kind.value, "rating": rating, "timestamp": now}}
        session, left = self._sessions.get(user, (f"s{rng.getrandbits(40):x}", rng.randint(5, 40)))
        self._sessions[user] = (session, left - 1) if left > 1 else (f"s{rng.getrandbits(40):x}", rng.randint(5, 40))
        action = rng.choices(list(Action), weights=[60, 8, 20, 8, 4])[0].value
        if rng.random() < self.invalid_ratio:
            action = action.upper() + "!"  # a defect that validation must catch
        return {"user_interaction": {"user_id": user, "session_id": session, "track_id": self.catalogue.track_id(),
                                     "action": action, "timestamp": now}}

    def batch(self, size: int) -> dict:
        return {"events": [self.event() for _ in range(size)]}


def run_traffic(url: str, key: str, rate: float, batch_size: int = 10, duration: float | None = None) -> int:
    """Post about `rate` events/s until `duration` passes (or forever); returns events accepted."""
    generator = TrafficGenerator()
    accepted = 0
    interval = batch_size / rate
    started = time.monotonic()
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=10) as client:
        while duration is None or time.monotonic() - started < duration:
            tick = time.monotonic()
            try:
                response = client.post("/v1/events", json=generator.batch(batch_size))
                if response.status_code == 202:
                    accepted += response.json()["accepted"]
                elif response.status_code in (429, 503):
                    time.sleep(float(response.headers.get("retry-after", 1)))
            except httpx.TransportError:
                time.sleep(1)  # the gateway is starting or restarting
            time.sleep(max(0.0, interval - (time.monotonic() - tick)))
    return accepted
