-- One feature view, history included: a row per entity and hour with activity, stamped
-- feature_timestamp = the end of that hour. Its window sums (`<count>_<window>`, from
-- processing/windows.py) cover the hours in [feature_timestamp - window, feature_timestamp), so a row
-- counts only events before its stamp. Derived features (ratios, scores) are computed here from them.
-- The brace placeholders (entity keys, outputs) are filled in from processing/features.py.
SELECT {keys}, to_timestamp((bucket + 1) * 3600) AS feature_timestamp, {outputs}
FROM windowed
