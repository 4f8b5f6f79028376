-- Point-in-time join, step 2: the features of the rows matched in step 1, fetched by equality on
-- (entity keys, feature_timestamp) (one row per entity and hour, so at most one each), with
-- windows that have elapsed since that row read as empty; in the labels' order.
-- The joins and columns are filled in from processing/features.py.
SELECT matched.* EXCLUDE (__label_row, {matched_columns}), {columns}
FROM matched
{joins}
ORDER BY matched.__label_row
