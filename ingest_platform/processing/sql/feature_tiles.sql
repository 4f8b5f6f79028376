-- Hourly tiles shared by every feature view: counts per (user, track, hour), from one scan of the
-- landed interactions. Hours are integers (hours since the epoch) until the final output.
CREATE OR REPLACE TEMP TABLE feature_tiles AS
SELECT user_id, track_id, epoch_us(timestamp) // 3600000000 AS bucket, {counts}
FROM user_interactions
GROUP BY ALL
