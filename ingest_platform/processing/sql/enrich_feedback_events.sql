-- Enrich one arrival-hour partition of feedback_events (1:1) with the served recommendation.
-- Parameters: $date, $hour. Left joins: an unknown recommendation keeps the event with NULLs.
SELECT f.* EXCLUDE (date, hour),
       date_trunc('hour', f.timestamp) AS event_hour,
       hour(f.timestamp) AS hour_of_day,
       isodow(f.timestamp) AS day_of_week,
       u.country, u.subscription_tier,
       r.track_id, r.model_version, r.rank, r.served_at,
       (epoch_us(f.timestamp) - epoch_us(r.served_at)) / 1e6 AS seconds_since_served,
       tr.genre,
       u.user_id IS NULL AS _user_missing,
       r.recommendation_id IS NULL AS _recommendation_missing
FROM feedback_events f
LEFT JOIN users u ON u.user_id = f.user_id
LEFT JOIN recommendations r ON r.recommendation_id = f.recommendation_id
LEFT JOIN tracks tr ON tr.track_id = r.track_id
WHERE f.date = $date AND f.hour = $hour
