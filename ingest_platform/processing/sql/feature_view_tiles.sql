-- One feature view's hourly tiles: its counts per entity and active hour, summed from the shared
-- (user, track, hour) tiles (GROUP BY is left out for the view keyed like the tiles themselves),
-- ordered by entity then hour, which is what the window kernel (processing/windows.py) needs.
SELECT {keys}, bucket, {hourly_counts}
FROM feature_tiles
{group_by}
ORDER BY {keys}, bucket
