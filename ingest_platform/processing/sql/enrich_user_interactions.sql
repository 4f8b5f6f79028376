-- Enrich one arrival-hour partition of user_interactions (1:1: every landed event, exactly once).
-- Parameters: $date, $hour (the partition), $lookback_hours (how far back a session is traced).
-- Session features are computed over the whole session as far as it has landed (any partition),
-- within $lookback_hours before and after the partition's events; left joins never drop an event.
WITH target AS (
    SELECT * EXCLUDE (date, hour) FROM user_interactions WHERE date = $date AND hour = $hour
),
bounds AS (
    SELECT min(timestamp) - to_hours($lookback_hours) AS lo,
           max(timestamp) + to_hours($lookback_hours) AS hi
    FROM target
),
session_events AS (
    SELECT e.event_id, e.user_id, e.session_id, e.action, e.timestamp
    FROM user_interactions e, bounds
    WHERE e.timestamp BETWEEN bounds.lo AND bounds.hi
      AND (e.user_id, e.session_id) IN (SELECT DISTINCT user_id, session_id FROM target)
),
sequence AS (
    SELECT event_id,
           min(timestamp) OVER whole_session AS session_start,
           count(*) FILTER (WHERE action = 'play') OVER up_to_here AS position_in_session,
           count(*) OVER up_to_here - 1 AS events_so_far,
           min(timestamp) FILTER (WHERE action IN ('pause', 'skip')) OVER after_here AS next_stop_at,
           min(timestamp) FILTER (WHERE action = 'play') OVER after_here AS next_play_at
    FROM session_events
    WINDOW whole_session AS (PARTITION BY user_id, session_id),
           up_to_here AS (PARTITION BY user_id, session_id ORDER BY timestamp, event_id
                          ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW),
           after_here AS (PARTITION BY user_id, session_id ORDER BY timestamp, event_id
                          ROWS BETWEEN 1 FOLLOWING AND UNBOUNDED FOLLOWING)
),
listening AS (
    SELECT t.*, s.session_start, s.position_in_session, s.events_so_far,
           CASE WHEN t.action = 'play' AND s.next_stop_at IS NOT NULL
                     AND (s.next_play_at IS NULL OR s.next_stop_at <= s.next_play_at)
                THEN (epoch_us(s.next_stop_at) - epoch_us(t.timestamp)) / 1e6 END AS seconds_to_stop,
           CASE WHEN t.action = 'play'
                THEN (epoch_us(least(s.next_stop_at, s.next_play_at)) - epoch_us(t.timestamp)) / 1e6
                END AS listened_seconds
    FROM target t LEFT JOIN sequence s USING (event_id)
)
SELECT l.*,
       date_trunc('hour', l.timestamp) AS event_hour,
       hour(l.timestamp) AS hour_of_day,
       isodow(l.timestamp) AS day_of_week,
       u.country, u.subscription_tier,
       tr.artist, tr.genre, tr.duration_ms AS track_duration_ms,
       CASE WHEN l.listened_seconds IS NOT NULL
            THEN least(1.0, l.listened_seconds * 1000.0 / nullif(tr.duration_ms, 0)) END AS completion_ratio,
       u.user_id IS NULL AS _user_missing,
       tr.track_id IS NULL AS _track_missing
FROM listening l
LEFT JOIN users u ON u.user_id = l.user_id
LEFT JOIN tracks tr ON tr.track_id = l.track_id
