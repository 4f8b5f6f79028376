-- Per user for one UTC day [$day_start, $day_start + 1 day), from events landed in any partition.
SELECT $day_start::DATE AS event_date,
       user_id,
       count(*) AS events,
       count(*) FILTER (WHERE action = 'play') AS plays,
       count(*) FILTER (WHERE action = 'skip') AS skips,
       count(*) FILTER (WHERE action = 'like') AS likes,
       count(*) FILTER (WHERE action = 'dislike') AS dislikes,
       count(DISTINCT session_id) AS sessions,
       count(DISTINCT track_id) AS unique_tracks,
       skips / nullif(plays, 0) AS skip_rate,
       sum(listened_seconds) AS listened_seconds,
       avg(completion_ratio) AS mean_completion_ratio,
       min(timestamp) AS first_event_at,
       max(timestamp) AS last_event_at
FROM interactions
WHERE date >= $min_arrival_date
  AND timestamp >= $day_start::TIMESTAMPTZ AND timestamp < $day_start::TIMESTAMPTZ + INTERVAL 1 DAY
GROUP BY user_id
ORDER BY user_id
