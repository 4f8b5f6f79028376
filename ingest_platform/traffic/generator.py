"""Synthetic listening traffic for the dev stack and benchmarks.

A seeded catalogue of users, tracks and served recommendations is written under
`$INGEST_DATA_DIR/reference/` (Parquet: users, tracks, recommendations) and the traffic refers to
it: track popularity follows a Zipf-like law (a few hits, a long tail), listeners play tracks in
sessions of plausible length (a handful to a few dozen tracks), skip unpopular tracks more often,
sometimes pause, like or dislike; feedback is about recommendations actually served to that user.
About 1% of events carry a value-level defect so the dead-letter path is exercised too.
"""

from __future__ import annotations

import bisect
import itertools
import random
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import httpx
import pyarrow as pa
import pyarrow.parquet as pq

COUNTRIES = (("US", 30), ("GB", 10), ("DE", 10), ("FR", 8), ("BR", 12), ("JP", 8), ("SE", 4), ("IN", 18))
TIERS = (("free", 60), ("premium", 32), ("family", 8))
GENRES = (("pop", 30), ("hip-hop", 20), ("rock", 15), ("electronic", 12), ("latin", 8), ("jazz", 5),
          ("classical", 4), ("country", 6))
MODEL_VERSIONS = ("als-v1", "two-tower-v2", "two-tower-v3")
RECOMMENDATIONS_PER_USER = 10  # one served list of ranks 1..10 per user


def _pick(rng: random.Random, weighted: tuple[tuple[str, int], ...]) -> str:
    return rng.choices([v for v, _ in weighted], weights=[w for _, w in weighted])[0]


@dataclass
class Catalogue:
    """Users u0.., tracks t0.. (t0 the most popular), recommendations r0.. (ten per user)."""

    users: int = 1_000
    tracks: int = 5_000
    seed: int = 7
    served_at: datetime = field(default_factory=lambda: datetime(2026, 1, 1, tzinfo=timezone.utc))
    rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        # Zipf-like popularity with exponent 1: P(rank r) ~ 1 / (r + 1).
        self._track_cumulative = list(itertools.accumulate(1 / (rank + 1) for rank in range(self.tracks)))

    @property
    def recommendations(self) -> int:
        return self.users * RECOMMENDATIONS_PER_USER

    def user_id(self) -> str:
        return f"u{self.rng.randrange(self.users)}"

    def track_index(self) -> int:
        point = self.rng.random() * self._track_cumulative[-1]
        return min(bisect.bisect_left(self._track_cumulative, point), self.tracks - 1)

    def track_id(self) -> str:
        return f"t{self.track_index()}"

    def recommendation_id(self, user: str) -> str:
        """One of the ids served to `user`."""
        return f"r{int(user[1:]) * RECOMMENDATIONS_PER_USER + self.rng.randrange(RECOMMENDATIONS_PER_USER)}"

    # --- the reference files ----------------------------------------------------------------

    def reference_tables(self) -> dict[str, pa.Table]:
        """The catalogue as tables; the same seed always gives the same catalogue."""
        rng = random.Random(self.seed * 7919)
        users = [f"u{i}" for i in range(self.users)]
        tracks = [f"t{i}" for i in range(self.tracks)]
        user_table = pa.table({
            "user_id": users,
            "country": [_pick(rng, COUNTRIES) for _ in users],
            "subscription_tier": [_pick(rng, TIERS) for _ in users],
            "signup_date": pa.array([date(2015, 1, 1) + timedelta(days=rng.randrange(4000)) for _ in users],
                                    pa.date32()),
            "birth_year": pa.array([rng.randint(1950, 2010) for _ in users], pa.int32()),
        })
        track_table = pa.table({
            "track_id": tracks,
            "title": [f"Track {i}" for i in range(self.tracks)],
            "artist": [f"Artist {rng.randrange(max(1, self.tracks // 8))}" for _ in tracks],
            "genre": [_pick(rng, GENRES) for _ in tracks],
            "duration_ms": pa.array([int(rng.gauss(210_000, 45_000)) // 1000 * 1000 for _ in tracks], pa.int64()),
            "release_year": pa.array([rng.randint(1960, 2026) for _ in tracks], pa.int32()),
        })
        rec_ids, rec_users, rec_tracks, models, ranks, served = [], [], [], [], [], []
        for u, user in enumerate(users):
            model = MODEL_VERSIONS[u % len(MODEL_VERSIONS)]
            when = self.served_at + timedelta(seconds=rng.randrange(86_400))
            for rank in range(1, RECOMMENDATIONS_PER_USER + 1):
                rec_ids.append(f"r{u * RECOMMENDATIONS_PER_USER + rank - 1}")
                rec_users.append(user)
                rec_tracks.append(f"t{min(int(rng.paretovariate(1.0)) - 1, self.tracks - 1)}")
                models.append(model)
                ranks.append(rank)
                served.append(when)
        rec_table = pa.table({
            "recommendation_id": rec_ids, "user_id": rec_users, "track_id": rec_tracks,
            "model_version": models, "rank": pa.array(ranks, pa.int32()),
            "served_at": pa.array(served, pa.timestamp("us", tz="UTC")),
        })
        return {"users": user_table, "tracks": track_table, "recommendations": rec_table}

    def write_reference(self, data_dir: Path, overwrite: bool = False) -> Path:
        """Write users/tracks/recommendations.parquet under `<data_dir>/reference/` (kept if present,
        so the traffic of a restarted dev stack keeps referring to the same catalogue)."""
        directory = data_dir / "reference"
        directory.mkdir(parents=True, exist_ok=True)
        for name, table in self.reference_tables().items():
            path = directory / f"{name}.parquet"
            if overwrite or not path.exists():
                tmp = directory / f".{name}.parquet.tmp"
                pq.write_table(table, tmp)
                tmp.replace(path)
        return directory


# --- listening sessions ----------------------------------------------------------------------------


@dataclass
class _Session:
    session_id: str
    tracks_left: int
    pending: deque = field(default_factory=deque)  # actions queued for the current track


@dataclass
class TrafficGenerator:
    catalogue: Catalogue = field(default_factory=Catalogue)
    invalid_ratio: float = 0.01
    feedback_ratio: float = 0.1
    _sessions: dict[str, _Session] = field(default_factory=dict)

    def _session(self, user: str) -> _Session:
        rng = self.catalogue.rng
        session = self._sessions.get(user)
        if session is None or (session.tracks_left <= 0 and not session.pending):
            # Session length: lognormal around a dozen tracks, 1..60.
            length = max(1, min(60, int(rng.lognormvariate(2.4, 0.7))))
            session = self._sessions[user] = _Session(f"s{rng.getrandbits(40):x}", length)
        return session

    def _next_track(self, session: _Session) -> None:
        """Queue a play of the next track and what the listener does with it."""
        rng = self.catalogue.rng
        index = self.catalogue.track_index()
        track = f"t{index}"
        session.tracks_left -= 1
        session.pending.append(("play", track))
        # Tail tracks are skipped more often than hits.
        skip_probability = 0.12 + 0.25 * min(1.0, index / max(1, self.catalogue.tracks // 4))
        if rng.random() < 0.05:
            session.pending.extend((("pause", track), ("play", track)))
        if rng.random() < skip_probability:
            session.pending.append(("skip", track))
        elif rng.random() < 0.10:
            session.pending.append(("like", track))
        elif rng.random() < 0.03:
            session.pending.append(("dislike", track))

    def event(self) -> dict:
        rng = self.catalogue.rng
        now = datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        user = self.catalogue.user_id()
        if rng.random() < self.feedback_ratio:
            kind = "explicit" if rng.random() < 0.5 else "implicit"
            rating = float(rng.randint(1, 5)) if kind == "explicit" else float(rng.random() < 0.6)
            return {"feedback_event": {"user_id": user, "recommendation_id": self.catalogue.recommendation_id(user),
                                       "feedback_type": kind, "rating": rating, "timestamp": now}}
        session = self._session(user)
        if not session.pending:
            self._next_track(session)
        action, track = session.pending.popleft()
        if rng.random() < self.invalid_ratio:
            action = action.upper() + "!"  # a defect that validation must catch
        return {"user_interaction": {"user_id": user, "session_id": session.session_id, "track_id": track,
                                     "action": action, "timestamp": now}}

    def batch(self, size: int) -> dict:
        return {"events": [self.event() for _ in range(size)]}


def run_traffic(url: str, key: str, rate: float, batch_size: int = 10, duration: float | None = None,
                data_dir: Path | None = None) -> int:
    """Write the reference catalogue, then post about `rate` events/s until `duration` passes (or
    forever); returns events accepted."""
    if data_dir is None:
        from ingest_platform.settings import get_settings

        data_dir = get_settings().data_dir
    generator = TrafficGenerator()
    generator.catalogue.write_reference(data_dir)
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
