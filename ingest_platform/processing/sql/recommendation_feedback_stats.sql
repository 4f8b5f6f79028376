-- Per model version and rank for one event hour, from feedback landed in any partition.
-- Implicit signals count as positive at rating >= 0.5.
SELECT $hour_start::TIMESTAMPTZ AS event_hour,
       model_version,
       rank,
       count(*) AS feedback_events,
       count(*) FILTER (WHERE feedback_type = 'explicit') AS explicit_count,
       avg(rating) FILTER (WHERE feedback_type = 'explicit') AS explicit_mean_rating,
       count(*) FILTER (WHERE feedback_type = 'implicit') AS implicit_count,
       avg(CASE WHEN rating >= 0.5 THEN 1.0 ELSE 0.0 END) FILTER (WHERE feedback_type = 'implicit')
           AS implicit_positive_rate,
       count(DISTINCT user_id) AS unique_users
FROM feedback
WHERE date >= $min_arrival_date
  AND timestamp >= $hour_start::TIMESTAMPTZ AND timestamp < $hour_start::TIMESTAMPTZ + INTERVAL 1 HOUR
GROUP BY model_version, rank
ORDER BY model_version NULLS LAST, rank NULLS LAST
