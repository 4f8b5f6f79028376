"""Entity keys as integers, for the feature views' kernel (processing/windows.py).

Each distinct key string gets a code once, from one hash pass over the landed events; all grouping
and sorting then runs on integers, and the strings come back only for the output rows. Codes follow
the keys' byte order, so rows ordered by code are ordered by key (Parquet min/max statistics stay
useful for `WHERE user_id = ...`). A null key is a key like any other: it gets the last code and
decodes back to null.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc


@dataclass(frozen=True)
class EncodedKeys:
    values: pa.Array  # code -> key: distinct keys in ascending order, then null if any key was null
    codes: pl.Series  # Int64, one per input row

    @property
    def cardinality(self) -> int:
        return len(self.values)

    def decode(self, codes: pl.Series) -> pa.Array:
        return pc.take(self.values, codes.to_arrow())


def encode_keys(keys: pa.ChunkedArray | pa.Array) -> EncodedKeys:
    if isinstance(keys, pa.Array):
        keys = pa.chunked_array([keys])
    encoded = pc.dictionary_encode(keys).unify_dictionaries()  # one dictionary for every chunk
    if encoded.num_chunks == 0:
        return EncodedKeys(pa.array([], keys.type), pl.Series(values=[], dtype=pl.Int64))
    dictionary = encoded.chunk(0).dictionary
    indices = pa.chunked_array([chunk.indices for chunk in encoded.chunks], encoded.type.index_type)
    # Renumber in key order: a dictionary code's new code is its rank among the distinct keys.
    rank = pc.subtract(pc.rank(dictionary, sort_keys="ascending", tiebreaker="first"), 1).cast(pa.int64())
    values = pc.take(dictionary, pc.sort_indices(dictionary))
    codes = pc.take(rank, indices)
    if codes.null_count:
        codes = pc.fill_null(codes, len(values))
        values = pa.concat_arrays([values, pa.nulls(1, values.type)])
    codes = pl.from_arrow(codes)
    assert isinstance(codes, pl.Series)
    return EncodedKeys(values, codes.cast(pl.Int64).rechunk())
