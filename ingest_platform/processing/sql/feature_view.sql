-- One feature view's stored rows, history included: a row per entity and hour with activity,
-- stamped feature_timestamp = the end of that hour. Its window counts (`<count>_<window>`, from
-- processing/windows.py) cover the hours in [feature_timestamp - window, feature_timestamp), so a row
-- counts only events before its stamp. Ratios and scores are not stored: the warehouse view computes
-- them from these counts (the `computed` columns of processing/catalog.py).
-- The brace placeholders (entity keys, outputs) are filled in from processing/features.py.
SELECT {keys}, to_timestamp((bucket + 1) * 3600) AS feature_timestamp, {outputs}
FROM windowed
