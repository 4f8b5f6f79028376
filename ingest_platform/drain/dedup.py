"""Exactly once by `event_id`: which occurrences of an event land, decided the same way every time.

An *occurrence* is one event at one stream position (`stream_id` = "<entry id>/<index>"). Client
retries and dead-letter replays put the same `event_id` at several positions. The rule, per stream:

- a **valid** occurrence lands iff it is the earliest valid occurrence of its `event_id`;
- an **invalid** occurrence lands (as a dead letter) iff no valid occurrence of its `event_id` comes
  before it, and no earlier invalid occurrence has the same `event_id`, the same raw payload and the
  same failures (an exact retry of a bad event is one dead letter, not two);
- every other occurrence is a duplicate and is dropped (counted in the drain report).

The claims live in Redis, per stream and ingestion hour: a set of the event_ids that landed valid
(`...:v`) and a set of the dead letters that landed (`...:d`, "<event_id>:<digest>"). A claim
script takes a batch of occurrences in stream order, decides each one against the sets of its hour
and the hour before (and the earlier occurrences of the batch), adds the winners, and stores its
decision under a key named after the batch (its chunk's first and last entry id and its number).
Ranges of a stream are claimed strictly in order (a range is planned only after the previous one
committed, and a range claims before it commits), and a retry or a racing drain of the same batch
gets the stored decision back instead of deciding again: the decision, hence every file, is a pure
function of the stream. A crash between claiming and writing is harmless for the same reason.

Window: a lookup reads the occurrence's own hour and the hour before it, so a duplicate is caught
when it arrives in the same ingestion hour as the first occurrence or the next one (at least 60
minutes apart, up to 120). Older sets are deleted once the drain cursor is two hours further
(`forget_hours_before`), so Redis holds about two hours of event ids: roughly 100 bytes per event.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import polars as pl
import redis

from ingest_platform.validation.split import split_valid_rows

HOUR_MS = 3_600_000
DEDUP_KEY_PREFIX = "ingest:dedup:"
# Safety net only: keys are deleted by `forget_hours_before` as the cursor moves on; the TTL
# catches streams that stop for good. It must outlive any drain backlog, so it is long.
DEDUP_TTL_SECONDS = 3 * 24 * 3600
CLAIM_BATCH = 20_000  # occurrences per script call: keeps Redis responsive between calls
ROW = "__occurrence"

# KEYS: valid set and dead-letter set of this hour, the same two of the hour before, the decision
# key. ARGV: ttl, the batch's digest, the kinds of the occurrences in stream order as one string
# ('v' valid, 'd' dead letter, one character each), their event_ids, then the digests of the 'd'
# ones in order. Returns "<batch digest>|<0-based indexes of the duplicates, comma-separated>":
# the decision stored the first time, on every later call.
_CLAIM_LUA = """
local decided = redis.call('GET', KEYS[5])
if decided then return decided end
local ttl, batch_digest, kinds = ARGV[1], ARGV[2], ARGV[3]
local n = #kinds
local SLICE = 4000
local function members(key, items)
  local found = {}
  if #items == 0 or redis.call('EXISTS', key) == 0 then return found end
  for first = 1, #items, SLICE do
    local last = math.min(first + SLICE - 1, #items)
    local flags = redis.call('SMISMEMBER', key, unpack(items, first, last))
    for i = 1, #flags do found[first + i - 1] = flags[i] == 1 end
  end
  return found
end
local function add(key, items)
  for first = 1, #items, SLICE do
    redis.call('SADD', key, unpack(items, first, math.min(first + SLICE - 1, #items)))
  end
  if #items > 0 then redis.call('EXPIRE', key, ttl) end
end
local ids = {}
for i = 1, n do ids[i] = ARGV[3 + i] end
local letters, letter_of = {}, {}
for i = 1, n do
  if string.byte(kinds, i) == 100 then  -- 'd'
    letters[#letters + 1] = ids[i] .. ':' .. ARGV[3 + n + #letters + 1]
    letter_of[i] = #letters
  end
end
local v_cur, v_prev = members(KEYS[1], ids), members(KEYS[3], ids)
local d_cur, d_prev = members(KEYS[2], letters), members(KEYS[4], letters)
local seen_v, seen_d, add_v, add_d, dropped = {}, {}, {}, {}, {}
for i = 1, n do
  local id = ids[i]
  local valid_before = v_cur[i] or v_prev[i] or seen_v[id]
  local l = letter_of[i]
  if not l then
    if valid_before then dropped[#dropped + 1] = i - 1
    else seen_v[id] = true; add_v[#add_v + 1] = id end
  else
    local letter = letters[l]
    if valid_before or d_cur[l] or d_prev[l] or seen_d[letter] then dropped[#dropped + 1] = i - 1
    else seen_d[letter] = true; add_d[#add_d + 1] = letter end
  end
end
add(KEYS[1], add_v)
add(KEYS[2], add_d)
local result = batch_digest .. '|' .. table.concat(dropped, ',')
redis.call('SET', KEYS[5], result, 'EX', ttl)
return result
"""


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
    """Validate every row, never showing validation two rows with the same event_id at once.

    Round k validates the k-th occurrence of each event_id, so the split's within-batch uniqueness
    check only sees ids reused inside one validation call, which this makes impossible; the
    across-occurrence rule is ours (above). Nearly always one round. Returns (valid, rejected).

    The drain builds frames without `raw_payload` (decoding every event's raw JSON costs more than
    validating it); `raw_payloads(stream_ids)` supplies it for the rejected rows, which are then
    validated again with it, so their failure messages can quote what the client sent."""
    valid, rejected = _validate_in_rounds(event_type, frame)
    if rejected.height and raw_payloads is not None:
        with_raw = rejected.drop("failures").rename({ROW: "__batch_row"}).with_columns(
            pl.Series("raw_payload", raw_payloads(rejected["stream_id"].to_list()), dtype=pl.String))
        again_valid, rejected = _validate_in_rounds(event_type, with_raw)
        if again_valid.height:
            raise RuntimeError("validation changed its verdict once raw_payload was present")
        # Row numbers are the batch's again (the second pass numbered the rejected rows alone).
        rejected = rejected.drop(ROW).rename({"__batch_row": ROW}).sort(ROW)
    return valid, rejected


def _validate_in_rounds(event_type: str, frame: pl.DataFrame):
    remaining = frame.with_row_index(ROW)
    valid_parts, rejected_parts = [], []
    while remaining.height:
        firsts = remaining.filter(pl.col("event_id").is_first_distinct())
        split = split_valid_rows(event_type, firsts)
        valid_parts.append(split.valid)
        rejected_parts.append(split.rejected)
        remaining = remaining.filter(~pl.col("event_id").is_first_distinct())
    if not valid_parts:
        empty = split_valid_rows(event_type, frame.with_row_index(ROW).clear())
        return empty.valid, empty.rejected
    valid = pl.concat(valid_parts, how="vertical_relaxed").sort(ROW)
    rejected = pl.concat(rejected_parts, how="vertical_relaxed").sort(ROW)
    return valid, rejected


def dead_letter_digest(raw_payload: str | None, failures) -> str:
    """What makes two dead letters of one event_id the same letter: payload and reasons."""
    text = f"{raw_payload}\x00{failures}"
    return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


def decide(client: redis.Redis, stream: str, hour_ms: int, event_type: str, frame: pl.DataFrame,
           raw_payloads=None, batch_name: str = "") -> Decided:
    """Validate `frame` (one hour of one stream, in stream order) and drop every duplicate.
    `batch_name` (the chunk's "<first id>_<last id>") names the stored decisions."""
    valid, rejected = validate_distinct(event_type, frame, raw_payloads)
    digests = [dead_letter_digest(raw, fails) for raw, fails in
               zip(rejected["raw_payload"].to_list(), rejected["failures"].to_list())]
    occurrences = pl.concat([
        valid.select(ROW, pl.lit("v").alias("kind"), pl.col("event_id").fill_null(""), pl.lit("").alias("digest")),
        rejected.select(ROW, pl.lit("d").alias("kind"), pl.col("event_id").fill_null(""),
                        pl.Series("digest", digests, dtype=pl.String)),
    ]).sort(ROW)
    dropped_rows = set()
    rows = occurrences[ROW].to_list()
    for index in claim(client, stream, hour_ms, batch_name, occurrences.select("kind", "event_id", "digest").rows()):
        dropped_rows.add(rows[index])
    kept_valid = valid.filter(~pl.col(ROW).is_in(list(dropped_rows))).drop(ROW)
    kept_rejected = rejected.filter(~pl.col(ROW).is_in(list(dropped_rows))).drop(ROW)
    return Decided(kept_valid, kept_rejected, len(dropped_rows))


def claim(client: redis.Redis, stream: str, hour_ms: int, batch_name: str,
          occurrences: list[tuple[str, str, str]]) -> list[int]:
    """Run the claim script over `occurrences` (kind, event_id, digest) in batches of CLAIM_BATCH;
    returns the indexes of the duplicates."""
    script = client.register_script(_CLAIM_LUA)
    keys = [hour_key(stream, hour_ms, "v"), hour_key(stream, hour_ms, "d"),
            hour_key(stream, hour_ms - HOUR_MS, "v"), hour_key(stream, hour_ms - HOUR_MS, "d")]
    dropped: list[int] = []
    for number, start in enumerate(range(0, len(occurrences), CLAIM_BATCH)):
        batch = occurrences[start:start + CLAIM_BATCH]
        kinds = "".join(kind for kind, _, _ in batch)
        ids = [event_id for _, event_id, _ in batch]
        letters = [digest for kind, _, digest in batch if kind == "d"]
        digest = hashlib.blake2b(f"{kinds}\x00{ids}\x00{letters}".encode(), digest_size=8).hexdigest()
        args: list[str | int] = [DEDUP_TTL_SECONDS, digest, kinds, *ids, *letters]
        decision = hour_key(stream, hour_ms, f"decided:{batch_name}:{number}")
        answer = script(keys=[*keys, decision], args=args)
        stored_digest, _, indexes = (answer.decode() if isinstance(answer, bytes) else str(answer)).partition("|")
        if stored_digest != digest:
            # The same entries validated differently than when this batch was first claimed (the
            # validation rules or their settings changed between a crash and its retry). Its own
            # earlier claims would now read as duplicates, so refuse rather than drop events.
            raise DedupConflict(
                f"{stream} batch {batch_name}#{number} was claimed with a different validation "
                "outcome; restore the validation settings it was first drained with, let it drain, "
                "then change them")
        dropped += [start + int(i) for i in indexes.split(",") if i]
    return dropped


class DedupConflict(RuntimeError):
    """A retried batch no longer matches the decision stored for it."""


def forget_hours_before(client: redis.Redis, stream: str, hour_ms: int) -> int:
    """Delete the dedup keys (sets and stored decisions) of `stream` for hours before `hour_ms`."""
    prefix = f"{DEDUP_KEY_PREFIX}{{{stream}}}:"
    old = [k for k in client.scan_iter(match=prefix + "*", count=1000)
           if int(k.decode()[len(prefix):].split(":", 1)[0]) < hour_ms]
    return client.delete(*old) if old else 0
