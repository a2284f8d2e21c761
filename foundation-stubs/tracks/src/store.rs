//! Storage of tracks and their audio, with the outbox events of downloads and deletions.

use std::collections::HashMap;

use foundation_kit::{
    Database, FoundationError,
    db::{Columns, Param, placeholders},
    outbox::{self, Relay},
    page::{self, Cursor},
    seed::{Seed, SeedGeoMode, SeedVisibility},
    time,
};
use protos::foundation::counts::v1::{TrackDeleted, TrackReaction, event::Kind};
use sha2::{Digest, Sha256};
use sqlx::{AssertSqlSafe, Row};

use crate::model::{self, Audio, GeoMode, Geoblocking, Metadata, Track, Visibility};

const COLUMNS: &str = "id, owner_id, title, description, genre, duration_ms, artwork_url, \
     create_time_us, update_time_us, visibility, secret_token, geo_mode, geo_territories, \
     downloadable, audio_id, audio_size, audio_sha256";

#[derive(Debug, Clone)]
pub struct TracksStore {
    db: Database,
    relay: Relay,
}

fn from_row(row: &dyn Columns) -> Result<Track, FoundationError> {
    let territories = row.text("geo_territories")?;
    Ok(Track {
        id: row.text("id")?,
        owner_id: row.text("owner_id")?,
        metadata: Metadata {
            title: row.text("title")?,
            description: row.text("description")?,
            genre: row.text("genre")?,
            duration_ms: row.int("duration_ms")?,
            artwork_url: row.text("artwork_url")?,
            visibility: Visibility::parse(&row.text("visibility")?)?,
            geoblocking: Geoblocking {
                mode: GeoMode::parse(&row.text("geo_mode")?)?,
                territories: territories
                    .split(',')
                    .filter(|code| !code.is_empty())
                    .map(str::to_owned)
                    .collect(),
            },
            downloadable: row.int("downloadable")? != 0,
        },
        secret_token: row.text("secret_token")?,
        create_time_us: row.int("create_time_us")?,
        update_time_us: row.int("update_time_us")?,
        audio: Audio {
            id: row.text("audio_id")?,
            size: row.int("audio_size")?,
            sha256: row.text("audio_sha256")?,
        },
    })
}

async fn insert(connection: &mut sqlx::AnyConnection, track: &Track) -> Result<(), sqlx::Error> {
    let m = &track.metadata;
    sqlx::query(
        "INSERT INTO tracks (id, owner_id, title, description, genre, duration_ms, artwork_url,
            create_time_us, update_time_us, visibility, secret_token, geo_mode, geo_territories,
            downloadable, audio_id, audio_size, audio_sha256)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)",
    )
    .bind(track.id.clone())
    .bind(track.owner_id.clone())
    .bind(m.title.clone())
    .bind(m.description.clone())
    .bind(m.genre.clone())
    .bind(m.duration_ms)
    .bind(m.artwork_url.clone())
    .bind(track.create_time_us)
    .bind(track.update_time_us)
    .bind(m.visibility.as_str())
    .bind(track.secret_token.clone())
    .bind(m.geoblocking.mode.as_str())
    .bind(m.geoblocking.territories.join(","))
    .bind(i64::from(m.downloadable))
    .bind(track.audio.id.clone())
    .bind(track.audio.size)
    .bind(track.audio.sha256.clone())
    .execute(connection)
    .await?;
    Ok(())
}

impl TracksStore {
    pub fn new(db: Database, relay: Relay) -> Self {
        Self { db, relay }
    }

    /// Seeds the tracks and audio of the seed dataset into an empty store.
    pub async fn seed(&self, seed: &Seed) -> Result<(), FoundationError> {
        let mut tx = self.db.pool.begin().await?;
        let existing: i64 = sqlx::query("SELECT COUNT(*) AS n FROM tracks")
            .fetch_one(&mut *tx)
            .await?
            .try_get("n")?;
        if existing > 0 {
            return Ok(());
        }
        for s in &seed.tracks {
            let audio_id = format!("aud_{}", s.id);
            sqlx::query("INSERT INTO audio_chunks (audio_id, seq, data) VALUES ($1, 0, $2)")
                .bind(audio_id.clone())
                .bind(s.audio.clone())
                .execute(&mut *tx)
                .await?;
            let track = Track {
                id: s.id.clone(),
                owner_id: s.owner_id.clone(),
                metadata: Metadata {
                    title: s.title.clone(),
                    description: s.description.clone(),
                    genre: s.genre.clone(),
                    duration_ms: s.duration_ms,
                    artwork_url: s.artwork_url.clone(),
                    visibility: match s.visibility {
                        SeedVisibility::Public => Visibility::Public,
                        SeedVisibility::Private => Visibility::Private,
                    },
                    geoblocking: Geoblocking {
                        mode: match s.geo_mode {
                            SeedGeoMode::None => GeoMode::None,
                            SeedGeoMode::AllowList => GeoMode::AllowList,
                            SeedGeoMode::BlockList => GeoMode::BlockList,
                        },
                        territories: s.territories.clone(),
                    },
                    downloadable: s.downloadable,
                },
                // Drawn now, once per database, like a new track's: never from the seed.
                secret_token: match s.visibility {
                    SeedVisibility::Private => model::new_secret_token(),
                    SeedVisibility::Public => String::new(),
                },
                create_time_us: s.create_time_us,
                update_time_us: s.create_time_us,
                audio: Audio {
                    id: audio_id,
                    size: s.audio.len() as i64,
                    sha256: hex::encode(Sha256::digest(&s.audio)),
                },
            };
            insert(&mut tx, &track).await?;
        }
        tx.commit().await?;
        tracing::info!(tracks = seed.tracks.len(), "seeded tracks");
        Ok(())
    }

    /// Registers an upload before its first chunk is staged.
    pub async fn begin_upload(&self, audio_id: &str) -> Result<(), sqlx::Error> {
        sqlx::query("INSERT INTO staged_uploads (audio_id, touch_time_us) VALUES ($1, $2)")
            .bind(audio_id.to_owned())
            .bind(time::now_us())
            .execute(&self.db.pool)
            .await?;
        Ok(())
    }

    /// Stores one chunk of an upload that is not committed yet, and marks the upload alive.
    /// Fails when the sweep has already removed the upload as stale.
    pub async fn stage_chunk(
        &self,
        audio_id: &str,
        seq: i64,
        data: &[u8],
    ) -> Result<(), FoundationError> {
        let mut tx = self.db.pool.begin().await?;
        // The write to the upload's row comes first: it serializes with the sweep of that row.
        let alive = sqlx::query("UPDATE staged_uploads SET touch_time_us = $1 WHERE audio_id = $2")
            .bind(time::now_us())
            .bind(audio_id.to_owned())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if alive == 0 {
            return Err(swept());
        }
        sqlx::query("INSERT INTO audio_chunks (audio_id, seq, data) VALUES ($1, $2, $3)")
            .bind(audio_id.to_owned())
            .bind(seq)
            .bind(data.to_vec())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Removes the chunks of an upload that will not commit.
    pub async fn discard_chunks(&self, audio_id: &str) -> Result<(), sqlx::Error> {
        let mut tx = self.db.pool.begin().await?;
        sqlx::query("DELETE FROM staged_uploads WHERE audio_id = $1")
            .bind(audio_id.to_owned())
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM audio_chunks WHERE audio_id = $1")
            .bind(audio_id.to_owned())
            .execute(&mut *tx)
            .await?;
        tx.commit().await
    }

    /// Removes the chunks of uploads whose last chunk arrived before `stale_before_us`: uploads
    /// cut off by a crash of whichever replica received them. Uploads in progress, on this
    /// replica or another, touch their row with every chunk and are left alone. Returns how
    /// many chunks were removed.
    pub async fn sweep_stale_uploads(&self, stale_before_us: i64) -> Result<u64, sqlx::Error> {
        let stale: Vec<String> =
            sqlx::query("SELECT audio_id FROM staged_uploads WHERE touch_time_us < $1")
                .bind(stale_before_us)
                .fetch_all(&self.db.pool)
                .await?
                .iter()
                .map(|row| row.try_get("audio_id"))
                .collect::<Result<_, _>>()?;
        let mut removed = 0;
        for audio_id in stale {
            let mut tx = self.db.pool.begin().await?;
            // Checked again under the row's lock: the upload may have staged a chunk or
            // committed since it was read.
            let still_stale = sqlx::query(
                "DELETE FROM staged_uploads WHERE audio_id = $1 AND touch_time_us < $2",
            )
            .bind(audio_id.clone())
            .bind(stale_before_us)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if still_stale == 1 {
                removed += sqlx::query("DELETE FROM audio_chunks WHERE audio_id = $1")
                    .bind(audio_id)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
            }
            tx.commit().await?;
        }
        Ok(removed)
    }

    /// Commits a track whose audio chunks are staged: from now on it exists. Fails, writing
    /// nothing, when the sweep has already removed the upload as stale.
    pub async fn create(&self, track: &Track) -> Result<(), FoundationError> {
        let mut tx = self.db.pool.begin().await?;
        let staged = sqlx::query("DELETE FROM staged_uploads WHERE audio_id = $1")
            .bind(track.audio.id.clone())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if staged == 0 {
            return Err(swept());
        }
        insert(&mut tx, track).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn get(&self, id: &str) -> Result<Option<Track>, FoundationError> {
        let sql = format!("SELECT {COLUMNS} FROM tracks WHERE id = $1");
        let tracks = self.db.read(&sql, &[Param::Text(id)], from_row).await?;
        Ok(tracks.into_iter().next())
    }

    /// The tracks among `ids` that exist, keyed by id.
    pub async fn batch_get(
        &self,
        ids: &[String],
    ) -> Result<HashMap<String, Track>, FoundationError> {
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        let sql = format!(
            "SELECT {COLUMNS} FROM tracks WHERE id IN ({})",
            placeholders(1, ids.len())
        );
        let params: Vec<Param<'_>> = ids.iter().map(|id| Param::Text(id)).collect();
        let tracks = self.db.read(&sql, &params, from_row).await?;
        Ok(tracks
            .into_iter()
            .map(|track| (track.id.clone(), track))
            .collect())
    }

    /// One page of an owner's tracks, newest first, and the cursor of the next page.
    pub async fn by_owner(
        &self,
        owner_id: &str,
        after: &Cursor,
        page_size: i64,
    ) -> Result<(Vec<Track>, Option<Cursor>), FoundationError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM tracks
             WHERE owner_id = $1 AND (create_time_us < $2 OR (create_time_us = $2 AND id < $3))
             ORDER BY create_time_us DESC, id DESC
             LIMIT $4"
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(owner_id.to_owned())
            .bind(after.time_us)
            .bind(after.id.clone())
            .bind(page_size + 1)
            .fetch_all(&self.db.pool)
            .await?;
        let tracks = rows
            .iter()
            .map(|row| from_row(row))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(page::split(tracks, page_size, |track| Cursor {
            time_us: track.create_time_us,
            id: track.id.clone(),
        }))
    }

    /// Applies `change` to the stored track in one transaction and returns the new state.
    pub async fn update(
        &self,
        id: &str,
        change: impl FnOnce(&mut Track) -> Result<(), FoundationError>,
    ) -> Result<Track, FoundationError> {
        let mut tx = self.db.pool.begin().await?;
        let now = time::now_us();
        // The write comes first so that SQLite takes its write lock at the start.
        let touched = sqlx::query("UPDATE tracks SET update_time_us = $1 WHERE id = $2")
            .bind(now)
            .bind(id.to_owned())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if touched == 0 {
            return Err(not_found(id));
        }
        let sql = format!("SELECT {COLUMNS} FROM tracks WHERE id = $1");
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(id.to_owned())
            .fetch_one(&mut *tx)
            .await?;
        let mut track = from_row(&row)?;
        change(&mut track)?;
        track.update_time_us = now;
        let m = &track.metadata;
        sqlx::query(
            "UPDATE tracks SET title = $1, description = $2, genre = $3, duration_ms = $4,
                artwork_url = $5, visibility = $6, secret_token = $7, geo_mode = $8,
                geo_territories = $9, downloadable = $10, update_time_us = $11
             WHERE id = $12",
        )
        .bind(m.title.clone())
        .bind(m.description.clone())
        .bind(m.genre.clone())
        .bind(m.duration_ms)
        .bind(m.artwork_url.clone())
        .bind(m.visibility.as_str())
        .bind(track.secret_token.clone())
        .bind(m.geoblocking.mode.as_str())
        .bind(m.geoblocking.territories.join(","))
        .bind(i64::from(m.downloadable))
        .bind(now)
        .bind(id.to_owned())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(track)
    }

    /// Deletes a track and its audio, and announces the deletion to counts.
    pub async fn delete(&self, id: &str) -> Result<(), FoundationError> {
        let mut tx = self.db.pool.begin().await?;
        let audio_id: Option<String> =
            sqlx::query("DELETE FROM tracks WHERE id = $1 RETURNING audio_id")
                .bind(id.to_owned())
                .fetch_optional(&mut *tx)
                .await?
                .map(|row| row.try_get("audio_id"))
                .transpose()?;
        let Some(audio_id) = audio_id else {
            return Err(not_found(id));
        };
        sqlx::query("DELETE FROM audio_chunks WHERE audio_id = $1")
            .bind(audio_id)
            .execute(&mut *tx)
            .await?;
        outbox::enqueue(
            &mut tx,
            Kind::TrackDeleted(TrackDeleted {
                track_id: id.to_owned(),
            }),
        )
        .await?;
        tx.commit().await?;
        self.relay.notify();
        Ok(())
    }

    /// How many chunks the audio has.
    pub async fn chunk_count(&self, audio_id: &str) -> Result<i64, sqlx::Error> {
        sqlx::query("SELECT COUNT(*) AS n FROM audio_chunks WHERE audio_id = $1")
            .bind(audio_id.to_owned())
            .fetch_one(&self.db.pool)
            .await?
            .try_get("n")
    }

    /// One stored chunk, or `None` when the audio is gone (the track was deleted).
    pub async fn chunk(&self, audio_id: &str, seq: i64) -> Result<Option<Vec<u8>>, sqlx::Error> {
        sqlx::query("SELECT data FROM audio_chunks WHERE audio_id = $1 AND seq = $2")
            .bind(audio_id.to_owned())
            .bind(seq)
            .fetch_optional(&self.db.pool)
            .await?
            .map(|row| row.try_get("data"))
            .transpose()
    }

    /// Records a download of an existing track; returns the event id.
    pub async fn record_download(
        &self,
        track_id: &str,
        user_id: &str,
    ) -> Result<String, FoundationError> {
        let mut tx = self.db.pool.begin().await?;
        // The write comes first so that SQLite takes its write lock at the start.
        let event_id = outbox::enqueue(
            &mut tx,
            Kind::TrackDownloaded(TrackReaction {
                track_id: track_id.to_owned(),
                user_id: user_id.to_owned(),
            }),
        )
        .await?;
        let exists = sqlx::query("SELECT 1 AS one FROM tracks WHERE id = $1")
            .bind(track_id.to_owned())
            .fetch_optional(&mut *tx)
            .await?
            .is_some();
        if !exists {
            return Err(not_found(track_id));
        }
        tx.commit().await?;
        self.relay.notify();
        Ok(event_id)
    }
}

/// The answer to an upload whose staged audio the sweep removed.
fn swept() -> FoundationError {
    FoundationError::FailedPrecondition(
        "the upload was idle for too long and its audio was removed; nothing was stored".into(),
    )
}

pub(crate) fn not_found(id: &str) -> FoundationError {
    FoundationError::NotFound {
        what: "track",
        id: id.to_owned(),
    }
}
