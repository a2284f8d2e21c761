-- Uploads whose chunks are staged and whose track row is not written yet, with the time their
-- last chunk arrived. The sweep removes only those idle for longer than
-- uploads.stale_after_ms, so that replicas sharing the database never remove each other's
-- uploads in progress; the commit removes the row in the transaction that writes the track.
CREATE TABLE staged_uploads (
    audio_id TEXT PRIMARY KEY,
    touch_time_us BIGINT NOT NULL
);

-- Chunks staged before this table existed and that belong to no track were left by uploads
-- that never committed; they are stale from the start.
INSERT INTO staged_uploads (audio_id, touch_time_us)
SELECT DISTINCT audio_id, 0 FROM audio_chunks
WHERE audio_id NOT IN (SELECT audio_id FROM tracks);
