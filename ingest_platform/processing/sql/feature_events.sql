-- The landed interactions as the feature views' kernel reads them (processing/windows.py): one scan,
-- the entity keys ({keys}), the hour as an integer (hours since the epoch) and the action as a small code
-- ({action_code}: COUNTED_ACTIONS in processing/features.py). All grouping happens in the kernel,
-- on integers. An event without a timestamp belongs to no hour and so to no window.
SELECT {keys}, epoch_us(timestamp) // 3600000000 AS bucket, ({action_code})::UTINYINT AS action
FROM user_interactions
WHERE timestamp IS NOT NULL
