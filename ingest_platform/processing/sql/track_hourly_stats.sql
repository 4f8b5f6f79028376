-- Per track for one event hour [$hour_start, $hour_start + 1 h), from events landed in any partition.
-- $min_arrival_date prunes partitions that cannot hold the hour (events land at or after they happen,
-- allowing a day of client clock skew).
SELECT $hour_start::TIMESTAMPTZ AS event_hour,
       track_id,
       count(*) FILTER (WHERE action = 'play') AS plays,
       count(*) FILTER (WHERE action = 'pause') AS pauses,
       count(*) FILTER (WHERE action = 'skip') AS skips,
       count(*) FILTER (WHERE action = 'like') AS likes,
       count(*) FILTER (WHERE action = 'dislike') AS dislikes,
       count(DISTINCT user_id) AS unique_listeners,
       skips / nullif(plays, 0) AS skip_rate,
       likes / nullif(likes + dislikes, 0) AS like_ratio
FROM interactions
WHERE date >= $min_arrival_date
  AND timestamp >= $hour_start::TIMESTAMPTZ AND timestamp < $hour_start::TIMESTAMPTZ + INTERVAL 1 HOUR
GROUP BY track_id
ORDER BY track_id
