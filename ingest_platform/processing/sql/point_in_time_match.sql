-- Point-in-time join, step 1: per label and feature view, the row it may use: the latest with
-- feature_timestamp <= the label's event_timestamp (never a later one). Only entity keys and
-- timestamps take part: DuckDB sorts the history side of an ASOF JOIN, and carrying every feature
-- column of millions of history rows through that sort cost most of the join's time.
-- The joins and matched columns are filled in from processing/features.py.
CREATE OR REPLACE TEMP TABLE matched AS
SELECT labels.*, {matched}
FROM labels
{joins}
