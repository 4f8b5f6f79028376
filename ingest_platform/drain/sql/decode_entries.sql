-- One row per event of the stream entries in `entries` (entry_pos, entry_id, payload: one page
-- of XRANGE), in stream order: the event_id, the contract fields, the gateway's stamps, the
-- event's position "<entry id>/<index in entry>" and the entry's index in the page (files are cut
-- between entries). {entry_type} is the JSON structure of a stream entry (contract.StreamEntry)
-- with the payload fields typed from the contract; `raw` is not read here (only dead letters need
-- it, and they need it verbatim).
WITH events AS (
    SELECT entry_pos, entry_id, entry.received_at AS received_at, entry.api_key_id AS api_key_id,
           unnest(entry.events) AS event, unnest(range(len(entry.events))) AS event_index
    FROM (SELECT entry_pos, entry_id, from_json(payload, '{entry_type}') AS entry FROM entries)
)
SELECT event.event_id AS event_id, {field_columns}, received_at, api_key_id,
       entry_id || '/' || event_index AS stream_id, entry_pos
FROM events
