-- Likes and reposts: kind is 'like' or 'repost'.
CREATE TABLE reactions (
    user_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    track_id TEXT NOT NULL,
    create_time_us BIGINT NOT NULL,
    PRIMARY KEY (user_id, kind, track_id)
);

CREATE INDEX reactions_by_user_time ON reactions (user_id, kind, create_time_us, track_id);
CREATE INDEX reactions_by_track ON reactions (track_id);
