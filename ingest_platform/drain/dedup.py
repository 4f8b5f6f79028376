"""Exactly once by `event_id`: which occurrences of an event land, decided the same way every time.

An *occurrence* is one event at one stream position (`stream_id` = "<entry id>/<index>"). Client
retries and dead-letter replays put the same `event_id` at several positions. The rule, per stream:

- a **valid** occurrence lands iff it is the earliest valid occurrence of its `event_id`;
- an **invalid** occurrence lands (as a dead letter) iff no valid occurrence of its `event_id` comes
  before it in an *earlier batch*, and no earlier invalid occurrence has the same `event_id`, the
  same raw payload and the same failures (an exact retry of a bad event is one dead letter, not two);
- inside one batch, a later occurrence with the same content as an earlier one of its id (the same
  payload fields, however the JSON was formatted and whether or not it carried the event_id) is a
  retry (dropped), and one with different content after the id's valid occurrence is a dead letter
  failing `event_id_unique_in_batch` (`validate_distinct`): a reused id never makes an event vanish;
- every other occurrence is a duplicate and is dropped (counted in the drain report). Across
  batches the `event_id` is an idempotency key: the first claim wins, whatever a later occurrence
  holds (the window keeps hashes of ids, not of contents).

The claims live in Redis as a *claim log* per stream and ingestion hour (`...:<hour>:log`, a list):
one element per claimed batch, holding the event_ids that landed valid and the dead letters that
landed ("<event_id>:<digest>"), packed into one msgpack blob. Deciding a batch means checking its
occurrences against the logs of its hour and the hour before (and the earlier occurrences of the
batch); the drain does that in its own process, against a window of those claims that it keeps
and extends incrementally (`_Window`, below), then appends its blob and stores its decision under
a key named after the batch (its chunk's first and last entry id) in one script. Why not a Redis
set per hour with SMISMEMBER/SADD in a script, as before: measured here, that costs Redis about
3 s of CPU per million events (SADD alone 0.6-0.8 us per member), more than the whole drain
budget; appending a blob is a memcpy.

Ranges of a stream are claimed strictly in order (a range is planned only after the previous one
committed, and a range claims before it commits), and a retry or a racing drain of the same batch
gets the stored decision back instead of deciding again: the decision, hence every file, is a pure
function of the stream. A crash between claiming and writing is harmless for the same reason. The
append is also conditional on the logs still having the length the drain decided against
(optimistic concurrency): if anything else appended meanwhile, the drain reloads and decides again.

Window: a lookup reads the occurrence's own hour and the hour before it, so a duplicate is caught
when it arrives in the same ingestion hour as the first occurrence or the next one (at least 60
minutes apart, up to 120). Older logs are deleted once the drain cursor is two hours further
(`forget_hours_before`). Redis holds the landed ids as zstd-compressed Arrow (measured 7.7 MB per
million gateway-stamped UUIDv7s, 19.5 MB per million random UUIDs).

The draining process does not hold the ids. Per hour it holds one UInt64 per landed id, in sorted
polars runs: the top 44 bits of the id's 64-bit hash and, in the low 20 bits, the index of the
log element (blob) the id was claimed in. 8 bytes per event whatever the id's length (the ids
themselves took id length + 16 bytes, 52 for a UUID). A lookup is a binary search of the batch's
hash prefixes. A prefix that is found is only a candidate: the blobs it points to are read back
from Redis (LINDEX, each decoded once per decision) and the id is compared exactly, so a collision
can neither drop a real event nor let a duplicate land. Reads happen for true duplicates across
batches (rare) and for collisions (n / 2^44 per lookup for a window of n ids). The hash is polars'
with a seed drawn per process: hashes never leave the process (each one rebuilds its window from
the logs), so polars keeping them stable only within a version is enough, and clients cannot aim
collisions at an unknown seed. Measured (docs/drain.md, `python -m
bench.dedup_cost`): 1M claims of random UUIDs cost 0.46 CPU s (1.03 with the
ids), of short ids 0.25 (0.23); a fresh process rebuilds 1M claims in 0.05-0.16 s.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import msgspec
import polars as pl
import pyarrow as pa
import redis

from ingest_platform.contract import EVENT_TYPES
from ingest_platform.validation.rules import EVENT_ID_UNIQUE
from ingest_platform.validation.split import reject_reused_ids, split_valid_rows

HOUR_MS = 3_600_000
DEDUP_KEY_PREFIX = "ingest:dedup:"
# Safety net only: keys are deleted by `forget_hours_before` as the cursor moves on; the TTL
# catches streams that stop for good. It must outlive any drain backlog, so it is long.
DEDUP_TTL_SECONDS = 3 * 24 * 3600
ROW = "__occurrence"
_CLAIM_ATTEMPTS = 5  # optimistic retries when another drain appended to the window meanwhile
_READ_PAGE = 64  # claim-log elements per LRANGE when a window catches up (bounds the raw blobs held)

# KEYS: the claim log of this hour, the claim log of the hour before, the decision key.
# ARGV: ttl, the lengths of the two logs the decision was made against, a header for a new log
# (a random token: a cached window recognises a log that was deleted and recreated), the blob of
# the batch's winners, the decision. Returns {1, decision} when it stored this one, {2, stored
# decision} when one was stored before (a retry or a racing drain), {0, ""} when a log changed
# length since the caller read it.
_CLAIM_LUA = """
local decided = redis.call('GET', KEYS[3])
if decided then return {2, decided} end
if redis.call('LLEN', KEYS[1]) ~= tonumber(ARGV[2]) or redis.call('LLEN', KEYS[2]) ~= tonumber(ARGV[3]) then
  return {0, ''}
end
if tonumber(ARGV[2]) == 0 then redis.call('RPUSH', KEYS[1], ARGV[4]) end
redis.call('RPUSH', KEYS[1], ARGV[5])
redis.call('EXPIRE', KEYS[1], ARGV[1])
redis.call('SET', KEYS[3], ARGV[6], 'EX', ARGV[1])
return {1, ARGV[6]}
"""
_blob_encoder = msgspec.msgpack.Encoder()
_blob_decoder = msgspec.msgpack.Decoder(tuple[bytes, list[str]])


@dataclass
class Decided:
    """A chunk's occurrences after validation and dedup."""

    valid: pl.DataFrame
    rejected: pl.DataFrame  # with the split's `failures` column
    duplicates: int


def hour_key(stream: str, hour_ms: int, part: str = "v") -> str:
    # The hash tag keeps a stream's keys in one cluster slot (the script reads several of them).
    return f"{DEDUP_KEY_PREFIX}{{{stream}}}:{hour_ms}:{part}"


def position_key(stream_id: str) -> tuple[int, int, int]:
    """Order of stream positions "<ms>-<seq>/<index>"."""
    entry, _, index = stream_id.partition("/")
    ms, _, seq = entry.partition("-")
    return int(ms), int(seq or 0), int(index or 0)


def validate_distinct(event_type: str, frame: pl.DataFrame, raw_payloads=None):
    """Validate a batch (in stream order), deciding inside it which occurrence of an event_id is
    the event. Returns (valid, rejected, repeats); the first two carry ROW, the occurrence's index
    in `frame`, and `repeats` holds the indexes of the retries (same content, dropped).

    Per event_id, the batch's first **valid** occurrence is the event (the only one that can land
    valid, see `_duplicates` for earlier batches):
    - occurrences before it (all invalid) are dead letters on their own merits: validation runs in
      rounds, round k validating the k-th occurrence of the ids whose earlier ones all failed, so
      pandera never sees an id twice in one call (an exact retry of such a letter is one letter:
      the claims compare letter digests);
    - a later occurrence with the same content as an earlier occurrence of its id (the same
      payload fields, however the JSON was formatted and whether or not it carried the event_id:
      `_contents`) is a client retry: a repeat, dropped and counted;
    - any other later occurrence reuses the id for a different event: a dead letter failing
      `event_id_unique_in_batch` plus everything else it fails (`reject_reused_ids`).
    Later occurrences are rare, so their contents are compared only when there are any;
    the common batch (distinct ids) pays one `is_first_distinct` and one pandera pass.

    The drain builds frames without `raw_payload` (decoding every event's raw JSON costs more than
    validating it); `raw_payloads(stream_ids)` supplies it for the rows that need it. Only a
    failure on a timestamp field quotes the raw text (the parsed column is null when it did not
    parse), so only then are the rejected rows validated again with it; otherwise their failures
    stand."""
    indexed = frame.with_row_index(ROW)
    valid, rejected, later = _first_valid_rounds(event_type, indexed)
    repeats = indexed[ROW].clear()
    if later.height:
        repeats, reused = _retries_and_reuses(event_type, indexed, later, raw_payloads)
        if reused.height:
            rejected = pl.concat([rejected, reject_reused_ids(event_type, reused)]).sort(ROW)
    if rejected.height and raw_payloads is not None:
        rejected = _with_raw_payloads(event_type, rejected, raw_payloads)
    return valid, rejected, repeats


def _first_valid_rounds(event_type: str, indexed: pl.DataFrame):
    """(valid, rejected, later): the first valid occurrence of each event_id and every occurrence
    before it, validated; `later` are the occurrences after a valid one, not validated."""
    valid_parts, rejected_parts, later_parts = [], [], []
    remaining = indexed
    while remaining.height:
        first = remaining["event_id"].is_first_distinct()
        everyone = bool(first.all())
        split = split_valid_rows(event_type, remaining if everyone else remaining.filter(first))
        valid_parts.append(split.valid)
        rejected_parts.append(split.rejected)
        if everyone:
            break
        # A later occurrence waits for the next round only if this round's occurrence of its id was
        # rejected (or it has no event_id); the others come after a valid one. Matching against the
        # rejected ids (few) rather than the valid ones (nearly all) keeps this cheap.
        later = remaining.filter(~first)
        undecided = later["event_id"].is_in(split.rejected["event_id"].implode()).fill_null(True)
        later_parts.append(later.filter(~undecided))
        remaining = later.filter(undecided)
    if not valid_parts:
        empty = split_valid_rows(event_type, indexed)
        return empty.valid, empty.rejected, indexed
    return _in_order(valid_parts), _in_order(rejected_parts), _in_order(later_parts or [indexed.clear()])


def _in_order(parts: list[pl.DataFrame]) -> pl.DataFrame:
    return parts[0] if len(parts) == 1 else pl.concat(parts).sort(ROW)


def _retries_and_reuses(event_type: str, indexed: pl.DataFrame, later: pl.DataFrame, raw_payloads):
    """(repeats, reused): `later`'s indexes that repeat an earlier occurrence of their id (the same
    content, `_contents`), and its other rows. Looks only at the occurrences of the ids concerned
    (a handful)."""
    # rechunk: polars 2.1 panics ("i < self.len()") formatting strings of some filtered multi-chunk
    # views (seen in the chaos test: the drain then failed on that range at every tick); few rows.
    involved = indexed.filter(pl.col("event_id").is_in(later["event_id"].unique().implode())).rechunk()
    content = _contents(event_type, involved, raw_payloads)
    keys = pl.DataFrame({"event_id": involved["event_id"], "content": content})
    retried = involved[ROW].filter(~keys.select(pl.struct(pl.all()).is_first_distinct()).to_series())
    is_repeat = later[ROW].is_in(retried.implode())
    return later[ROW].filter(is_repeat), later.filter(~is_repeat)


def _contents(event_type: str, rows: pl.DataFrame, raw_payloads) -> pl.Series:
    """What makes two occurrences of an event_id the same event: the contract's payload fields as
    decoded, not the bytes received. A client retrying after `503 outcome_unknown` adds the
    event_id the gateway generated, and any client may re-serialise its JSON (key order,
    whitespace); the gateway rejects unknown fields, so the payload fields are the whole event.
    Not received_at or api_key_id: the gateway stamps those per request.

    A timestamp field that did not parse is null in the frame, so two different unparseable
    values would look alike: such rows compare by their raw payload instead (tagged, so a raw never
    equals encoded fields), read only for them. Without raws (entries written without one, or a
    frame built without `raw_payloads`) they compare by fields."""
    event = EVENT_TYPES[event_type]
    fields = rows.select(pl.struct(*event.payload_fields).struct.json_encode()).to_series()
    unparsed = rows.select(pl.any_horizontal(pl.col(*event.timestamp_fields).is_null())).to_series()
    if not unparsed.any():
        return fields
    at = unparsed.arg_true()
    raws = _raws(rows[at], raw_payloads)
    tagged = pl.select(pl.when(raws.is_null() | (raws == "null")).then(fields.gather(at))
                       .otherwise(pl.format("\x00raw:{}", raws))).to_series()
    return fields.scatter(at, tagged)


def _raws(rows: pl.DataFrame, raw_payloads) -> pl.Series:
    """The raw payloads of `rows` (null where there is none)."""
    if raw_payloads is not None:
        return pl.Series(raw_payloads(rows["stream_id"].to_list()), dtype=pl.String)
    if "raw_payload" in rows.columns:
        return rows["raw_payload"]
    return pl.repeat(None, rows.height, dtype=pl.String, eager=True)


def _with_raw_payloads(event_type: str, rejected: pl.DataFrame, raw_payloads) -> pl.DataFrame:
    """`rejected` with each row's raw payload, and timestamp failures quoting the raw text."""
    raw = pl.Series("raw_payload", raw_payloads(rejected["stream_id"].to_list()), dtype=pl.String)
    if not _fails_on(rejected, EVENT_TYPES[event_type].timestamp_fields):
        return rejected.with_columns(raw)
    with_raw = rejected.with_columns(raw)
    reused = with_raw["failures"].list.eval(pl.element().struct.field("check") == EVENT_ID_UNIQUE).list.any()
    own = with_raw.filter(~reused).drop("failures").rename({ROW: "__batch_row"})
    again_valid, own_rejected, again_later = _first_valid_rounds(event_type, own.with_row_index(ROW))
    if again_valid.height or again_later.height:
        raise RuntimeError("validation changed its verdict once raw_payload was present")
    # Row numbers are the batch's again (the second pass numbered the rejected rows alone).
    own_rejected = own_rejected.drop(ROW).rename({"__batch_row": ROW}).select(rejected.columns)
    reused_rejected = reject_reused_ids(event_type, with_raw.filter(reused).drop("failures"))
    return pl.concat([own_rejected, reused_rejected.select(rejected.columns)]).sort(ROW)


def reuses_event_id(failures: list[dict]) -> bool:
    """Whether a rejected row's failures say it reused an event_id of its batch."""
    return any(failure["check"] == EVENT_ID_UNIQUE for failure in failures)


def _fails_on(rejected: pl.DataFrame, columns: tuple[str, ...]) -> bool:
    """Whether any failure of `rejected` concerns one of `columns`."""
    failed_columns = rejected.select(pl.col("failures").list.eval(pl.element().struct.field("column"))
                                     .explode().unique()).to_series()
    return bool(failed_columns.is_in(list(columns)).any())


def dead_letter_digest(raw_payload: str | None, failures) -> str:
    """What makes two dead letters of one event_id the same letter: payload and reasons."""
    text = f"{raw_payload}\x00{failures}"
    return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


@dataclass
class Validated:
    """A chunk's occurrences after validation, before dedup (see `drop_duplicates`)."""

    event_ids: pl.Series  # every occurrence's, in stream order
    valid: pl.DataFrame  # with ROW, the occurrence's index
    rejected: pl.DataFrame  # with ROW and the split's `failures` column
    digests: list[str]  # the rejected occurrences' letter digests
    repeats: pl.Series  # ROW of the retries (same content) inside the chunk (always dropped)


def validate(event_type: str, frame: pl.DataFrame, raw_payloads=None) -> Validated:
    """The first half of `decide`: needs no Redis, so a drain runs it for its next chunk while the
    current one is being claimed."""
    valid, rejected, repeats = validate_distinct(event_type, frame, raw_payloads)
    digests = [dead_letter_digest(raw, fails) for raw, fails in
               zip(rejected["raw_payload"].to_list(), rejected["failures"].to_list())]
    return Validated(frame["event_id"], valid, rejected, digests, repeats)


def drop_duplicates(client: redis.Redis, stream: str, hour_ms: int, batch_name: str, validated: Validated) -> Decided:
    """The second half of `decide`: claim the occurrences and drop the duplicates. Chunks of a
    stream must come here in stream order."""
    valid, rejected = validated.valid, validated.rejected
    height = len(validated.event_ids)
    # Every row is valid, rejected or a repeat, so the occurrences in stream order are the frame's
    # rows: the rejected ones and the repeats marked, no concatenation and sort of the sides.
    rejected_rows = rejected[ROW]
    kinds = pl.repeat("v", height, eager=True).scatter(rejected_rows, "d")
    if len(validated.repeats):
        kinds = kinds.scatter(validated.repeats, "r")
    occurrences = pl.DataFrame({
        "kind": kinds,
        "event_id": validated.event_ids.fill_null(""),
        "digest": pl.repeat("", height, eager=True).scatter(rejected_rows, validated.digests),
    })
    dropped = claim_frame(client, stream, hour_ms, batch_name, occurrences)
    if not dropped:
        return Decided(valid.drop(ROW), rejected.drop(ROW), 0)
    dropped_rows = pl.Series(dropped, dtype=valid[ROW].dtype).implode()
    kept_valid = valid.filter(~pl.col(ROW).is_in(dropped_rows)).drop(ROW)
    kept_rejected = rejected.filter(~pl.col(ROW).is_in(dropped_rows)).drop(ROW)
    return Decided(kept_valid, kept_rejected, len(dropped))


def decide(client: redis.Redis, stream: str, hour_ms: int, event_type: str, frame: pl.DataFrame,
           raw_payloads=None, batch_name: str = "") -> Decided:
    """Validate `frame` (one hour of one stream, in stream order) and drop every duplicate.
    `batch_name` (the chunk's "<first id>_<last id>") names the stored decision."""
    return drop_duplicates(client, stream, hour_ms, batch_name, validate(event_type, frame, raw_payloads))


def claim(client: redis.Redis, stream: str, hour_ms: int, batch_name: str,
          occurrences: list[tuple[str, str, str]]) -> list[int]:
    """`claim_frame` for a list of (kind, event_id, digest) tuples."""
    kinds, ids, digests = (list(c) for c in zip(*occurrences)) if occurrences else ([], [], [])
    frame = pl.DataFrame({"kind": kinds, "event_id": ids, "digest": digests},
                         schema={"kind": pl.String, "event_id": pl.String, "digest": pl.String})
    return claim_frame(client, stream, hour_ms, batch_name, frame)


def claim_frame(client: redis.Redis, stream: str, hour_ms: int, batch_name: str,
                occurrences: pl.DataFrame) -> list[int]:
    """Decide `occurrences` (kind 'v' valid, 'd' dead letter or 'r' a repeat inside the batch,
    event_id, digest of the dead letters; in stream order) against the claim logs and store the decision; returns the
    0-based indexes of the duplicates, the same on every call for the same batch."""
    if not occurrences.height:
        return []
    digest = _batch_digest(occurrences)
    decision_key = hour_key(stream, hour_ms, f"claimed:{batch_name}")
    with _windows_lock:
        stored = client.get(decision_key)
        if stored is None:
            _refuse_legacy_decision(client, stream, hour_ms, batch_name)
        claims = _ClaimReader(client)  # the blobs hash hits point to, read once per decision
        for _ in range(_CLAIM_ATTEMPTS):
            if stored is not None:
                break
            try:
                current, before = _windows.load(client, stream, hour_ms)
                dropped, landed_valid, landed_prefixes, landed_letters = _duplicates(
                    occurrences, current, before, claims)
            except _LogReplaced:
                continue  # a log was deleted under us: the next load reads it from scratch
            decision = f"{digest}|{','.join(map(str, dropped))}"
            header = current.token or secrets.token_hex(8).encode()
            blob = _encode_blob(landed_valid, landed_letters)
            outcome, answer = _claim_script(client)(
                keys=[current.key, before.key, decision_key],
                args=[DEDUP_TTL_SECONDS, current.length, before.length, header, blob, decision])
            if outcome == 0:
                continue  # a log grew meanwhile: read the new claims and decide again
            if outcome == 1:  # ours was appended: the window holds it too, without reading it back
                current.add(header, landed_prefixes, landed_letters)
            stored = answer
        if stored is None:
            raise RuntimeError(f"{stream} batch {batch_name}: the claim logs kept changing; retry the drain")
    stored_digest, _, indexes = stored.decode().partition("|")
    if stored_digest != digest:
        # The same entries validated differently than when this batch was first claimed (the
        # validation rules or their settings changed between a crash and its retry). Its own
        # earlier claims would now read as duplicates, so refuse rather than drop events.
        raise DedupConflict(
            f"{stream} batch {batch_name} was claimed with a different validation outcome; "
            "restore the validation settings it was first drained with, let it drain, then change them")
    return [int(i) for i in indexes.split(",") if i]


def _batch_digest(occurrences: pl.DataFrame) -> str:
    """What the batch's validation outcome was: every occurrence's kind, id and letter digest.
    (Joined in polars: no Python string per occurrence. Kinds and digests hold no separator, and a
    retry has the same ids, so the joined text tells outcomes apart.)"""
    digest = hashlib.blake2b(digest_size=8)
    for name in ("kind", "event_id", "digest"):
        digest.update(occurrences[name].fill_null("").str.join("\x1f").item().encode())
        digest.update(b"\x00")
    return digest.hexdigest()


def _duplicates(occurrences: pl.DataFrame, current: "_Window", before: "_Window", claims: "_ClaimReader"):
    """The rule of this module over one batch: (dropped indexes, landed valid ids and their hash
    prefixes, landed letters).

    Valid occurrences (nearly all) are decided column-wise: window lookups in polars and its
    first-occurrence test. Dead letters are few and follow the longer rule row by row. Repeats
    (kind 'r', retries of the same content inside the batch) are always dropped.

    Inside a batch, validation has already decided reuse (`validate_distinct`): a letter after a
    valid occurrence of its id is an id reused for a different event, which must not vanish, so
    only earlier batches' valid claims (the window) drop a letter, never the batch's own."""
    indexed = occurrences.with_row_index("i")
    valid = indexed.filter(pl.col("kind") == "v")
    probe = _Probe.of(valid["event_id"], current.hash_ids)
    known = current.known(probe, claims) | before.known(probe, claims)
    lands = ~known & probe.ids.is_first_distinct()
    landed_valid, landed_prefixes = probe.ids.filter(lands), probe.prefixes.filter(lands)
    dropped = valid["i"].filter(~lands).to_list()
    repeats = indexed.filter(pl.col("kind") == "r")["i"].to_list()
    if repeats:
        dropped = sorted(dropped + repeats)

    letters = indexed.filter(pl.col("kind") == "d")
    landed_letters: list[str] = []
    if letters.height:
        letter_probe = _Probe.of(letters["event_id"], current.hash_ids)
        known_valid = (current.known(letter_probe, claims) | before.known(letter_probe, claims)).to_list()
        seen: set[str] = set()
        rows = letters.select("i", "event_id", "digest").iter_rows()
        for (i, event_id, letter_digest), in_window in zip(rows, known_valid):
            letter = f"{event_id}:{letter_digest}"
            if in_window or letter in current.letters or letter in before.letters or letter in seen:
                dropped.append(i)
            else:
                seen.add(letter)
                landed_letters.append(letter)
        dropped.sort()
    return dropped, landed_valid, landed_prefixes, landed_letters


def _polars_hash(seed: int) -> Callable[[pl.Series], pl.Series]:
    """64-bit hashes of ids (polars' vectorised string hash). Polars promises the same value only
    within one version, which is enough: hashes never leave the process, each process hashes the
    ids it reads back from the claim logs itself."""
    return lambda ids: ids.hash(seed)


# A window entry is one UInt64: the top 44 bits of the id's hash, then the index of the claim-log
# element (blob) holding the id in the low 20 bits. 8 bytes per event; sorting entries sorts by
# hash. 44 bits keep false hits (each costs one blob read) at n / 2^44 per lookup, about 2 per
# million lookups in a window of 36M events. An index past the last slot is stored as the last
# slot, which then means "that element or a later one" (a log that long would take 290 claims a
# second for an hour; it stays exact, only slower).
_SLOTS = 1 << 20
_LAST_AT = _SLOTS - 1


def _prefix(hashes: pl.Series) -> pl.Series:
    """The part of a hash the window keeps (its low bits cleared)."""
    return hashes - hashes % _SLOTS


def _entries(hashes: pl.Series, at: int) -> pl.Series:
    """Window entries of ids claimed in log element `at` (unsorted; hashes or their prefixes)."""
    return (_prefix(hashes) + min(at, _LAST_AT)).alias("entry")


@dataclass
class _Probe:
    """Ids to look up and their hash prefixes, also sorted once for every run of both windows:
    binary searches with ascending keys walk a run's memory in order (measured 2.5-3x faster on
    runs of 1M-20M entries, which pays for the sort)."""

    ids: pl.Series
    prefixes: pl.Series  # in the ids' order
    sorted_prefixes: pl.Series

    @classmethod
    def of(cls, ids: pl.Series, hash_ids: Callable[[pl.Series], pl.Series]) -> "_Probe":
        prefixes = _prefix(hash_ids(ids))
        return cls(ids, prefixes, prefixes.sort())


_NO_HITS = pl.DataFrame(schema={"prefix": pl.UInt64, "at": pl.UInt64})


@dataclass
class _Window:
    """What one hour's claim log held when last read: its header token, its length, and its claims:
    the valid event_ids as sorted runs of entries (hash prefix and log element, above; binary
    search in polars: no Python object per id, and a lookup costs O(batch x log(window)), not a
    pass over the window), the dead letters as a set (few). The ids themselves stay in Redis: a
    hash hit is confirmed against the ids of the elements it points to (`known`). The sets of the
    earlier set-based format are read once into `legacy`, exact, for an upgrade."""

    key: str
    hash_ids: Callable[[pl.Series], pl.Series]
    token: bytes | None = None
    length: int = 0
    runs: list[pl.Series] = field(default_factory=list)
    letters: set[str] = field(default_factory=set)
    legacy: pl.Series = field(default_factory=lambda: pl.Series("event_id", [], dtype=pl.String))

    def known(self, probe: _Probe, claims: "_ClaimReader") -> pl.Series:
        """Exactly which of the probe's ids this window holds (a bool per id)."""
        known = pl.repeat(False, len(probe.ids), eager=True).alias("known")
        hits = self.hits(probe.sorted_prefixes)
        if hits.height:
            hit_prefixes = hits["prefix"].unique().implode()
            rows = probe.prefixes.is_in(hit_prefixes).arg_true()
            claimed = claims.landed(self, hits["at"].unique().to_list())
            # Only the claimed ids that share a hash prefix with a hit can equal one (equal ids
            # hash alike), so the exact comparison sees a handful of strings, not whole blobs.
            claimed = claimed.filter(_prefix(self.hash_ids(claimed)).is_in(hit_prefixes))
            confirmed = rows.filter(probe.ids.gather(rows).is_in(claimed.implode()))
            known = known.scatter(confirmed, True)
        if len(self.legacy):
            known = known | probe.ids.is_in(self.legacy.implode())
        return known

    def hits(self, sorted_prefixes: pl.Series) -> pl.DataFrame:
        """(prefix, at): each queried prefix the window holds, with every log element holding an
        id of that prefix (several when ids collide)."""
        parts = [found for run in self.runs if (found := _run_hits(run, sorted_prefixes)).height]
        return pl.concat(parts) if parts else _NO_HITS

    def add_run(self, entries: pl.Series) -> None:
        """Add a sorted run of entries; runs of similar size are merged, so there are O(log n)."""
        if not len(entries):
            return
        self.runs.append(entries)
        while len(self.runs) > 1 and len(self.runs[-2]) <= 2 * len(self.runs[-1]):
            last = self.runs.pop().to_frame()  # a linear merge of two sorted runs, not a sort
            self.runs[-1] = self.runs[-1].to_frame().merge_sorted(last, key="entry").to_series()

    def add(self, header: bytes, prefixes: pl.Series, letters: list[str]) -> None:
        """Our own claim, just appended to the log as its element `length` (after the header)."""
        if self.length == 0:
            self.token, self.length = header, 1
        self.add_run(_entries(prefixes, self.length).sort())
        self.length += 1
        self.letters.update(letters)

    def nbytes(self) -> int:
        """Memory of the runs (the part that grows with traffic)."""
        return sum(run.estimated_size() for run in self.runs)


def _run_hits(run: pl.Series, prefixes: pl.Series) -> pl.DataFrame:
    """(prefix, at) of the run's entries whose hash prefix is among the queried ones (ascending)."""
    left = run.search_sorted(prefixes, side="left")
    found = _prefix(run.gather(left.clip(upper_bound=len(run) - 1))) == prefixes
    if not found.any():
        return _NO_HITS
    # Entries of one prefix sit side by side, ordered by element: [prefix, prefix + last slot].
    hit = prefixes.filter(found).unique()
    spans = pl.DataFrame({"lo": run.search_sorted(hit, side="left"),
                          "hi": run.search_sorted(hit + _LAST_AT, side="right")})
    entries = run.gather(spans.select(pos=pl.int_ranges("lo", "hi")).explode("pos")["pos"])
    return pl.DataFrame({"prefix": _prefix(entries), "at": entries % _SLOTS})


class _ClaimReader:
    """The landed ids of claim-log elements, read from Redis when a hash hit points to them (true
    duplicates, which are rare, and hash collisions, which are rarer) and decoded once per decision."""

    def __init__(self, client: redis.Redis):
        self._client = client
        self._decoded: dict[tuple[str, bytes | None, int], pl.Series] = {}

    def landed(self, window: _Window, elements: list[int]) -> pl.Series:
        if _LAST_AT in elements:  # the last slot stands for every element from there on
            elements = [i for i in elements if i < _LAST_AT] + list(range(_LAST_AT, window.length))
        missing = [i for i in elements if (window.key, window.token, i) not in self._decoded]
        if missing:
            self._read(window, missing)
        return pl.concat([self._decoded[(window.key, window.token, i)] for i in elements], rechunk=False)

    def _read(self, window: _Window, elements: list[int]) -> None:
        pipe = self._client.pipeline(transaction=False)
        pipe.lindex(window.key, 0)  # the header: proves it is still the log the window was read from
        for i in elements:
            pipe.lindex(window.key, i)
        token, *blobs = pipe.execute()
        if token != window.token or any(blob is None for blob in blobs):
            raise _LogReplaced(window.key)
        for i, blob in zip(elements, blobs):
            self._decoded[(window.key, window.token, i)] = _decode_blob(blob)[0]


class _LogReplaced(RuntimeError):
    """A claim log was deleted (and maybe recreated) since its window was read: read it again."""


class _Windows:
    """The claim logs this process has read, per Redis server and log key, extended by reading only
    the elements appended since (a log is append-only until it is deleted as a whole).

    `hash_ids` maps ids to the window's 64-bit hashes; by default polars' hash with a seed drawn
    per process, so ids chosen by clients cannot be crafted to collide (a collision costs a read
    from Redis, never a wrong decision). Tests inject a colliding one."""

    def __init__(self, hash_ids: Callable[[pl.Series], pl.Series] | None = None):
        self.hash_ids = hash_ids or _polars_hash(secrets.randbits(64))
        self._cache: dict[tuple, _Window] = {}

    def load(self, client: redis.Redis, stream: str, hour_ms: int) -> tuple[_Window, _Window]:
        server = _server_identity(client)
        hours = (hour_ms, hour_ms - HOUR_MS)
        for cached in [k for k in self._cache if k[:2] == (server, stream) and k[2] not in hours]:
            del self._cache[cached]  # a drain never looks further back than the hour before
        return tuple(self._load_one(client, server, stream, h) for h in hours)

    def _load_one(self, client: redis.Redis, server: tuple, stream: str, hour_ms: int) -> _Window:
        key = hour_key(stream, hour_ms, "log")
        pipe = client.pipeline(transaction=False)
        pipe.lindex(key, 0)
        pipe.llen(key)
        token, length = pipe.execute()
        window = self._cache.get((server, stream, hour_ms))
        if window is None or window.token != token or window.length > length:
            window = self._new_window(client, key, token, stream, hour_ms)
            self._cache[(server, stream, hour_ms)] = window
        if length > window.length:
            self._extend(client, window)
        return window

    def _new_window(self, client: redis.Redis, key: str, token: bytes | None, stream: str,
                    hour_ms: int) -> _Window:
        """A window read from scratch (new, or the log was deleted and recreated meanwhile)."""
        window = _Window(key, self.hash_ids, token)
        legacy_valid, window.letters = _legacy_sets(client, stream, hour_ms)
        if legacy_valid:
            window.legacy = pl.Series("event_id", sorted(legacy_valid), dtype=pl.String)
        return window

    def _extend(self, client: redis.Redis, window: _Window) -> None:
        """Read the elements appended since, in pages (a fresh process reads a whole hour), hash
        each page's ids into one run and drop the ids."""
        while True:
            first = window.length
            pipe = client.pipeline(transaction=False)
            pipe.lindex(window.key, 0)  # pages are not one snapshot: check it is still the same log
            pipe.lrange(window.key, first, first + _READ_PAGE - 1)
            token, fetched = pipe.execute()
            if token != window.token:
                raise _LogReplaced(window.key)
            if not fetched:
                return
            window.length += len(fetched)
            entries = []
            for index, element in enumerate(fetched, start=first):
                if index == 0:
                    continue  # element 0 is the header
                valid, letters = _decode_blob(element)
                entries.append(_entries(self.hash_ids(valid), index))
                window.letters.update(letters)
            if entries:
                window.add_run(pl.concat(entries).sort())


def _encode_blob(valid: pl.Series, letters: list[str]) -> bytes:
    """A claim: the landed valid ids as an Arrow IPC stream (zstd), the landed letters as a list."""
    sink = pa.BufferOutputStream()
    table = pa.table({"event_id": valid.to_arrow()})
    with pa.ipc.new_stream(sink, table.schema, options=pa.ipc.IpcWriteOptions(compression="zstd")) as writer:
        writer.write_table(table)
    return _blob_encoder.encode((sink.getvalue().to_pybytes(), letters))


def _decode_blob(blob: bytes) -> tuple[pl.Series, list[str]]:
    ipc, letters = _blob_decoder.decode(blob)
    ids = pa.ipc.open_stream(ipc).read_all().column("event_id")
    return pl.Series("event_id", ids, dtype=pl.String), letters


def _server_identity(client: redis.Redis) -> tuple:
    kwargs = client.connection_pool.connection_kwargs
    return kwargs.get("host"), kwargs.get("port"), kwargs.get("path"), kwargs.get("db")


def _legacy_sets(client: redis.Redis, stream: str, hour_ms: int) -> tuple[set[str], set[str]]:
    """Claims an earlier version kept in Redis sets (`...:v`, `...:d`): part of the window until
    they are forgotten with their hour, so an upgrade does not let a retry land twice."""
    pipe = client.pipeline(transaction=False)
    pipe.smembers(hour_key(stream, hour_ms, "v"))
    pipe.smembers(hour_key(stream, hour_ms, "d"))
    valid, letters = pipe.execute()
    return {v.decode() for v in valid}, {d.decode() for d in letters}


def _refuse_legacy_decision(client: redis.Redis, stream: str, hour_ms: int, batch_name: str) -> None:
    """A batch an earlier version began claiming (its decisions were stored per 20,000 occurrences)
    cannot be decided again without reading its own claims as duplicates."""
    if client.exists(hour_key(stream, hour_ms, f"decided:{batch_name}:0")):
        raise DedupConflict(
            f"{stream} batch {batch_name} was claimed by an earlier version of the drain; let that "
            "version finish the pending range, then upgrade")


_windows = _Windows()


def window_bytes() -> int:
    """Memory of this process's dedup windows (their runs): bounded by design to the events of two
    ingestion hours per stream, 8 bytes each (the soak benchmark reports it beside the RSS)."""
    return sum(window.nbytes() for window in list(_windows._cache.values()))
_windows_lock = threading.Lock()  # one claim at a time per process: the windows are shared


def _claim_script(client: redis.Redis):
    return client.register_script(_CLAIM_LUA)


class DedupConflict(RuntimeError):
    """A retried batch no longer matches the decision stored for it."""


def forget_hours_before(client: redis.Redis, stream: str, hour_ms: int) -> int:
    """Delete the dedup keys of `stream` (claim logs, stored decisions, sets of the earlier format)
    for hours before `hour_ms`."""
    prefix = f"{DEDUP_KEY_PREFIX}{{{stream}}}:"
    old = [k for k in client.scan_iter(match=prefix + "*", count=1000)
           if int(k.decode()[len(prefix):].split(":", 1)[0]) < hour_ms]
    return client.delete(*old) if old else 0
