-- One feature view, history included, from the hourly tiles. A row per entity and hour with
-- activity, stamped feature_timestamp = the end of that hour; each window value sums the hours in
-- [feature_timestamp - window, feature_timestamp), so it counts only events before the stamp.
-- The brace placeholders (entity keys, counts, window sums, outputs) are filled in from
-- processing/features.py, which derives them from the catalogue.
WITH hourly AS (
    SELECT {keys}, bucket, {hourly_sums}
    FROM feature_tiles
    GROUP BY ALL
),
windowed AS (
    SELECT {keys}, to_timestamp((bucket + 1) * 3600) AS feature_timestamp, {window_sums}
    FROM hourly
    WINDOW {windows}
)
SELECT {keys}, feature_timestamp, {outputs}
FROM windowed
