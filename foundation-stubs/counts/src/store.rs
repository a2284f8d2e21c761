//! Storage of the counters and of the ids of applied events.

use std::collections::HashMap;

use foundation_kit::{
    Database,
    db::{Param, placeholders},
    seed::Seed,
    time,
};
use protos::foundation::counts::v1::{Event, TrackCounts, UserCounts, event::Kind};
use sqlx::{AnyConnection, Row};

#[derive(Debug, Clone)]
pub struct CountsStore {
    db: Database,
}

/// What applying a batch of events did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    pub applied: u32,
    pub duplicates: u32,
}

impl CountsStore {
    pub fn new(db: Database) -> Self {
        Self { db }
    }

    /// Seeds the aggregates of the seed dataset into an empty store.
    pub async fn seed(&self, seed: &Seed) -> Result<(), sqlx::Error> {
        let mut tx = self.db.pool.begin().await?;
        let existing: i64 = sqlx::query("SELECT COUNT(*) AS n FROM track_counts")
            .fetch_one(&mut *tx)
            .await?
            .try_get("n")?;
        if existing > 0 {
            return Ok(());
        }
        for (track, (likes, reposts, downloads)) in seed.track_counts() {
            sqlx::query(
                "INSERT INTO track_counts (track_id, likes, reposts, downloads) VALUES ($1, $2, $3, $4)",
            )
            .bind(track)
            .bind(likes as i64)
            .bind(reposts as i64)
            .bind(downloads as i64)
            .execute(&mut *tx)
            .await?;
        }
        for (user, (followers, following)) in seed.user_counts() {
            sqlx::query(
                "INSERT INTO user_counts (user_id, followers, following) VALUES ($1, $2, $3)",
            )
            .bind(user)
            .bind(followers as i64)
            .bind(following as i64)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        tracing::info!("seeded counts");
        Ok(())
    }

    /// Counters for each id, in request order; unknown ids count zero.
    pub async fn track_counts(&self, ids: &[String]) -> Result<Vec<TrackCounts>, sqlx::Error> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT track_id, likes, reposts, downloads FROM track_counts WHERE track_id IN ({})",
            placeholders(1, ids.len())
        );
        let params: Vec<Param<'_>> = ids.iter().map(|id| Param::Text(id)).collect();
        let found: HashMap<String, (i64, i64, i64)> = self
            .db
            .read(&sql, &params, |row| {
                Ok::<_, sqlx::Error>((
                    row.text("track_id")?,
                    (
                        row.int("likes")?,
                        row.int("reposts")?,
                        row.int("downloads")?,
                    ),
                ))
            })
            .await?
            .into_iter()
            .collect();
        Ok(ids
            .iter()
            .map(|id| {
                let (likes, reposts, downloads) = found.get(id).copied().unwrap_or_default();
                TrackCounts {
                    track_id: id.clone(),
                    likes_count: clamp(likes),
                    reposts_count: clamp(reposts),
                    downloads_count: clamp(downloads),
                }
            })
            .collect())
    }

    /// Counters for each id, in request order; unknown ids count zero.
    pub async fn user_counts(&self, ids: &[String]) -> Result<Vec<UserCounts>, sqlx::Error> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT user_id, followers, following FROM user_counts WHERE user_id IN ({})",
            placeholders(1, ids.len())
        );
        let params: Vec<Param<'_>> = ids.iter().map(|id| Param::Text(id)).collect();
        let found: HashMap<String, (i64, i64)> = self
            .db
            .read(&sql, &params, |row| {
                Ok::<_, sqlx::Error>((
                    row.text("user_id")?,
                    (row.int("followers")?, row.int("following")?),
                ))
            })
            .await?
            .into_iter()
            .collect();
        Ok(ids
            .iter()
            .map(|id| {
                let (followers, following) = found.get(id).copied().unwrap_or_default();
                UserCounts {
                    user_id: id.clone(),
                    followers_count: clamp(followers),
                    following_count: clamp(following),
                }
            })
            .collect())
    }

    /// Applies a batch of events in one transaction; an event id seen before changes nothing.
    pub async fn apply(&self, events: &[Event]) -> Result<Applied, sqlx::Error> {
        let mut tx = self.db.pool.begin().await?;
        let mut outcome = Applied::default();
        let now = time::now_us();
        for event in events {
            let inserted = sqlx::query(
                "INSERT INTO applied_events (id, apply_time_us) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING",
            )
            .bind(event.id.clone())
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if inserted == 0 {
                outcome.duplicates += 1;
                continue;
            }
            outcome.applied += 1;
            if let Some(kind) = &event.kind {
                apply_one(&mut tx, kind).await?;
            }
        }
        tx.commit().await?;
        Ok(outcome)
    }
}

/// Counters are deltas, so events may arrive in any order; an unlike that overtakes its like
/// leaves a transient negative value, which reads as zero.
fn clamp(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

async fn apply_one(connection: &mut AnyConnection, kind: &Kind) -> Result<(), sqlx::Error> {
    let track = |track_id: &str, likes: i64, reposts: i64, downloads: i64| {
        (track_id.to_owned(), likes, reposts, downloads)
    };
    let delta = match kind {
        Kind::TrackLiked(r) => track(&r.track_id, 1, 0, 0),
        Kind::TrackUnliked(r) => track(&r.track_id, -1, 0, 0),
        Kind::TrackReposted(r) => track(&r.track_id, 0, 1, 0),
        Kind::TrackUnreposted(r) => track(&r.track_id, 0, -1, 0),
        Kind::TrackDownloaded(r) => track(&r.track_id, 0, 0, 1),
        Kind::UserFollowed(f) => {
            return follow(connection, &f.follower_id, &f.followee_id, 1).await;
        }
        Kind::UserUnfollowed(f) => {
            return follow(connection, &f.follower_id, &f.followee_id, -1).await;
        }
        Kind::TrackDeleted(d) => {
            sqlx::query("INSERT INTO deleted_tracks (track_id) VALUES ($1) ON CONFLICT (track_id) DO NOTHING")
                .bind(d.track_id.clone())
                .execute(&mut *connection)
                .await?;
            sqlx::query("DELETE FROM track_counts WHERE track_id = $1")
                .bind(d.track_id.clone())
                .execute(&mut *connection)
                .await?;
            return Ok(());
        }
    };
    let (track_id, likes, reposts, downloads) = delta;
    let deleted = sqlx::query("SELECT 1 AS one FROM deleted_tracks WHERE track_id = $1")
        .bind(track_id.clone())
        .fetch_optional(&mut *connection)
        .await?
        .is_some();
    if deleted {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO track_counts (track_id, likes, reposts, downloads) VALUES ($1, $2, $3, $4)
         ON CONFLICT (track_id) DO UPDATE SET
           likes = track_counts.likes + excluded.likes,
           reposts = track_counts.reposts + excluded.reposts,
           downloads = track_counts.downloads + excluded.downloads",
    )
    .bind(track_id)
    .bind(likes)
    .bind(reposts)
    .bind(downloads)
    .execute(connection)
    .await?;
    Ok(())
}

async fn follow(
    connection: &mut AnyConnection,
    follower: &str,
    followee: &str,
    delta: i64,
) -> Result<(), sqlx::Error> {
    const UPSERT: &str =
        "INSERT INTO user_counts (user_id, followers, following) VALUES ($1, $2, $3)
         ON CONFLICT (user_id) DO UPDATE SET
           followers = user_counts.followers + excluded.followers,
           following = user_counts.following + excluded.following";
    sqlx::query(UPSERT)
        .bind(followee.to_owned())
        .bind(delta)
        .bind(0_i64)
        .execute(&mut *connection)
        .await?;
    sqlx::query(UPSERT)
        .bind(follower.to_owned())
        .bind(0_i64)
        .bind(delta)
        .execute(connection)
        .await?;
    Ok(())
}
