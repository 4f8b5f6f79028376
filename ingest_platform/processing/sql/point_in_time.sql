-- Point-in-time join: each label gets, per feature view, the latest row with
-- feature_timestamp <= the label's event_timestamp (never a later one). Rows of views are
-- ASOF-joined in turn; the joins and columns are filled in from processing/features.py.
SELECT labels.*, {columns}
FROM labels
{joins}
