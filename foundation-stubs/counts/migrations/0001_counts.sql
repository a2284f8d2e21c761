CREATE TABLE track_counts (
    track_id TEXT PRIMARY KEY,
    likes BIGINT NOT NULL,
    reposts BIGINT NOT NULL,
    downloads BIGINT NOT NULL
);

CREATE TABLE user_counts (
    user_id TEXT PRIMARY KEY,
    followers BIGINT NOT NULL,
    following BIGINT NOT NULL
);

-- Every applied event id, so that a redelivered event changes nothing.
CREATE TABLE applied_events (
    id TEXT PRIMARY KEY,
    apply_time_us BIGINT NOT NULL
);

-- Deleted tracks: late reaction events for them are ignored.
CREATE TABLE deleted_tracks (
    track_id TEXT PRIMARY KEY
);
