-- Event hours that received events after they closed, since $since (a received_at watermark):
-- events whose timestamp lies in an hour before the hour they landed in. The aggregates of those
-- hours are not rebuilt by their own partition's automation, so the late_events sensor asks for it.
-- Only partitions landed at or after $since's date are opened. The row with event_hour NULL carries
-- the new watermark (the newest received_at seen).
WITH recent AS (
    SELECT timestamp, received_at, date, hour FROM (
        SELECT timestamp, received_at, date, hour FROM interactions
        UNION ALL
        SELECT timestamp, received_at, date, hour FROM feedback
    )
    WHERE date >= CAST($since::TIMESTAMPTZ AS DATE) AND received_at > $since::TIMESTAMPTZ
)
SELECT date_trunc('hour', timestamp) AS event_hour, max(received_at) AS newest_received_at, count(*) AS events
FROM recent
WHERE date_trunc('hour', timestamp) < CAST(date AS TIMESTAMPTZ) + to_hours(hour)
GROUP BY ALL
UNION ALL
SELECT NULL, max(received_at), count(*) FROM recent
ORDER BY event_hour NULLS LAST
