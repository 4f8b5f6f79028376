-- Per genre for one event hour; tracks without a genre (unknown track, or enrichment off) as 'unknown'.
WITH per_genre AS (
    SELECT coalesce(genre, 'unknown') AS genre,
           count(*) FILTER (WHERE action = 'play') AS plays,
           count(*) FILTER (WHERE action = 'skip') AS skips,
           count(*) FILTER (WHERE action = 'like') AS likes,
           count(DISTINCT user_id) AS unique_listeners
    FROM interactions
    WHERE date >= $min_arrival_date
      AND timestamp >= $hour_start::TIMESTAMPTZ AND timestamp < $hour_start::TIMESTAMPTZ + INTERVAL 1 HOUR
    GROUP BY ALL
)
SELECT $hour_start::TIMESTAMPTZ AS event_hour, genre, plays, skips, likes, unique_listeners,
       plays / nullif(sum(plays) OVER (), 0) AS play_share,
       skips / nullif(plays, 0) AS skip_rate
FROM per_genre
ORDER BY genre
