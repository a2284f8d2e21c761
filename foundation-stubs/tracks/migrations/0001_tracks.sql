CREATE TABLE tracks (
    id TEXT PRIMARY KEY,
    owner_id TEXT NOT NULL,
    title TEXT NOT NULL,
    description TEXT NOT NULL,
    genre TEXT NOT NULL,
    duration_ms BIGINT NOT NULL,
    artwork_url TEXT NOT NULL,
    create_time_us BIGINT NOT NULL,
    update_time_us BIGINT NOT NULL,
    -- 'public' or 'private'.
    visibility TEXT NOT NULL,
    -- Empty unless the track is private.
    secret_token TEXT NOT NULL,
    -- 'none', 'allow_list' or 'block_list'.
    geo_mode TEXT NOT NULL,
    -- Comma-separated ISO 3166-1 alpha-2 codes.
    geo_territories TEXT NOT NULL,
    downloadable BIGINT NOT NULL,
    audio_id TEXT NOT NULL,
    audio_size BIGINT NOT NULL,
    audio_sha256 TEXT NOT NULL
);

CREATE INDEX tracks_by_owner_time ON tracks (owner_id, create_time_us, id);

-- Audio in chunks, so that neither upload nor download holds a whole file in memory. Chunks of
-- an upload that never committed a track row are removed.
CREATE TABLE audio_chunks (
    audio_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    data BYTEA NOT NULL,
    PRIMARY KEY (audio_id, seq)
);
