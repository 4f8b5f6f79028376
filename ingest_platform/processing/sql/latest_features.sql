-- The latest row of a feature view per entity as of $now: what the online store serves. The row of
-- the hour in progress (feature_timestamp = the end of that hour) counts; windows that have fully
-- elapsed since the row read as 0 (see processing/features.py, expired windows).
WITH latest AS (
    SELECT * FROM {view}
    WHERE feature_timestamp <= date_trunc('hour', $now::TIMESTAMPTZ) + INTERVAL 1 HOUR
    QUALIFY row_number() OVER (PARTITION BY {keys} ORDER BY feature_timestamp DESC) = 1
)
SELECT {keys}, feature_timestamp, {columns}
FROM latest
