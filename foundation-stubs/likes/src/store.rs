//! Storage of likes and reposts, with their outbox events.

use std::collections::HashSet;

use foundation_kit::{
    Database,
    db::{Param, pair_placeholders, placeholders},
    outbox::{self, Relay},
    page::{self, Cursor},
    seed::Seed,
    time,
};
use protos::foundation::counts::v1::{TrackReaction, event::Kind};
use sqlx::Row;

/// What a reaction is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReactionKind {
    Like,
    Repost,
}

impl ReactionKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Like => "like",
            Self::Repost => "repost",
        }
    }
}

#[derive(Debug, Clone)]
pub struct LikesStore {
    db: Database,
    relay: Relay,
}

impl LikesStore {
    pub fn new(db: Database, relay: Relay) -> Self {
        Self { db, relay }
    }

    /// Seeds the likes and reposts of the seed dataset into an empty store, without events:
    /// the counts service seeds the matching aggregates itself.
    pub async fn seed(&self, seed: &Seed) -> Result<(), sqlx::Error> {
        let mut tx = self.db.pool.begin().await?;
        let existing: i64 = sqlx::query("SELECT COUNT(*) AS n FROM reactions")
            .fetch_one(&mut *tx)
            .await?
            .try_get("n")?;
        if existing > 0 {
            return Ok(());
        }
        for (kind, links) in [
            (ReactionKind::Like, &seed.likes),
            (ReactionKind::Repost, &seed.reposts),
        ] {
            for link in links {
                sqlx::query(
                    "INSERT INTO reactions (user_id, kind, track_id, create_time_us) VALUES ($1, $2, $3, $4)",
                )
                .bind(link.from.clone())
                .bind(kind.as_str())
                .bind(link.to.clone())
                .bind(link.time_us)
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        tracing::info!(
            likes = seed.likes.len(),
            reposts = seed.reposts.len(),
            "seeded reactions"
        );
        Ok(())
    }

    /// Adds or removes a reaction; returns whether anything changed. A change and its event
    /// commit together.
    pub async fn set(
        &self,
        user_id: &str,
        track_id: &str,
        kind: ReactionKind,
        on: bool,
    ) -> Result<bool, sqlx::Error> {
        let mut tx = self.db.pool.begin().await?;
        // The write comes first so that SQLite takes its write lock at the start.
        let changed = if on {
            sqlx::query(
                "INSERT INTO reactions (user_id, kind, track_id, create_time_us) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (user_id, kind, track_id) DO NOTHING",
            )
            .bind(user_id.to_owned())
            .bind(kind.as_str())
            .bind(track_id.to_owned())
            .bind(time::now_us())
            .execute(&mut *tx)
            .await?
            .rows_affected()
        } else {
            sqlx::query("DELETE FROM reactions WHERE user_id = $1 AND kind = $2 AND track_id = $3")
                .bind(user_id.to_owned())
                .bind(kind.as_str())
                .bind(track_id.to_owned())
                .execute(&mut *tx)
                .await?
                .rows_affected()
        } == 1;
        if changed {
            let reaction = TrackReaction {
                track_id: track_id.to_owned(),
                user_id: user_id.to_owned(),
            };
            let event = match (kind, on) {
                (ReactionKind::Like, true) => Kind::TrackLiked(reaction),
                (ReactionKind::Like, false) => Kind::TrackUnliked(reaction),
                (ReactionKind::Repost, true) => Kind::TrackReposted(reaction),
                (ReactionKind::Repost, false) => Kind::TrackUnreposted(reaction),
            };
            outbox::enqueue(&mut tx, event).await?;
        }
        tx.commit().await?;
        if changed {
            self.relay.notify();
        }
        Ok(changed)
    }

    /// For each track id, in request order: (liked, reposted) by the user.
    pub async fn reactions(
        &self,
        user_id: &str,
        track_ids: &[String],
    ) -> Result<Vec<(bool, bool)>, sqlx::Error> {
        if track_ids.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT track_id, kind FROM reactions WHERE user_id = $1 AND track_id IN ({})",
            placeholders(2, track_ids.len())
        );
        let mut params = vec![Param::Text(user_id)];
        params.extend(track_ids.iter().map(|id| Param::Text(id)));
        let rows = self
            .db
            .read(&sql, &params, |row| {
                Ok::<_, sqlx::Error>((row.text("track_id")?, row.text("kind")?))
            })
            .await?;
        let mut liked = HashSet::new();
        let mut reposted = HashSet::new();
        for (track, kind) in rows {
            if kind == ReactionKind::Like.as_str() {
                liked.insert(track);
            } else {
                reposted.insert(track);
            }
        }
        Ok(track_ids
            .iter()
            .map(|id| (liked.contains(id), reposted.contains(id)))
            .collect())
    }

    /// For each (user, track) pair, in request order: (liked, reposted) by that user. One
    /// statement for the pairs of many users.
    pub async fn reactions_of_pairs(
        &self,
        pairs: &[(String, String)],
    ) -> Result<Vec<(bool, bool)>, sqlx::Error> {
        if pairs.is_empty() {
            return Ok(Vec::new());
        }
        let values = pair_placeholders(pairs.len());
        let sql = format!(
            "SELECT user_id, track_id, kind FROM reactions WHERE (user_id, track_id) IN (VALUES {values})"
        );
        let params: Vec<Param<'_>> = pairs
            .iter()
            .flat_map(|(user, track)| [Param::Text(user), Param::Text(track)])
            .collect();
        let rows = self
            .db
            .read(&sql, &params, |row| {
                Ok::<_, sqlx::Error>((
                    (row.text("user_id")?, row.text("track_id")?),
                    row.text("kind")?,
                ))
            })
            .await?;
        let mut liked = HashSet::new();
        let mut reposted = HashSet::new();
        for (pair, kind) in rows {
            if kind == ReactionKind::Like.as_str() {
                liked.insert(pair);
            } else {
                reposted.insert(pair);
            }
        }
        Ok(pairs
            .iter()
            .map(|pair| (liked.contains(pair), reposted.contains(pair)))
            .collect())
    }

    /// One page of a user's likes, newest first, and the cursor of the next page if any.
    pub async fn liked(
        &self,
        user_id: &str,
        after: &Cursor,
        page_size: i64,
    ) -> Result<(Vec<(String, i64)>, Option<Cursor>), sqlx::Error> {
        let rows = sqlx::query(
            "SELECT track_id, create_time_us FROM reactions
             WHERE user_id = $1 AND kind = 'like'
               AND (create_time_us < $2 OR (create_time_us = $2 AND track_id < $3))
             ORDER BY create_time_us DESC, track_id DESC
             LIMIT $4",
        )
        .bind(user_id.to_owned())
        .bind(after.time_us)
        .bind(after.id.clone())
        .bind(page_size + 1)
        .fetch_all(&self.db.pool)
        .await?;
        let likes = rows
            .iter()
            .map(|row| Ok((row.try_get("track_id")?, row.try_get("create_time_us")?)))
            .collect::<Result<Vec<(String, i64)>, sqlx::Error>>()?;
        Ok(page::split(likes, page_size, |(id, time_us)| Cursor {
            time_us: *time_us,
            id: id.clone(),
        }))
    }

    /// Removes every reaction to a track; returns (likes, reposts) removed. No events: the
    /// tracks service announces the deletion, and counts drops the track's counters for it.
    pub async fn delete_track(&self, track_id: &str) -> Result<(u64, u64), sqlx::Error> {
        let mut tx = self.db.pool.begin().await?;
        let mut removed = [0; 2];
        for (slot, kind) in [ReactionKind::Like, ReactionKind::Repost]
            .into_iter()
            .enumerate()
        {
            removed[slot] = sqlx::query("DELETE FROM reactions WHERE track_id = $1 AND kind = $2")
                .bind(track_id.to_owned())
                .bind(kind.as_str())
                .execute(&mut *tx)
                .await?
                .rows_affected();
        }
        tx.commit().await?;
        Ok((removed[0], removed[1]))
    }
}
