CREATE TABLE follows (
    follower_id TEXT NOT NULL,
    followee_id TEXT NOT NULL,
    create_time_us BIGINT NOT NULL,
    PRIMARY KEY (follower_id, followee_id)
);

CREATE INDEX follows_by_follower_time ON follows (follower_id, create_time_us, followee_id);
