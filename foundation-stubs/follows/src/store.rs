//! Storage of follows, with their outbox events.

use std::collections::HashSet;

use foundation_kit::{
    Database,
    db::{Param, pair_placeholders, placeholders},
    outbox::{self, Relay},
    page::{self, Cursor},
    seed::Seed,
    time,
};
use protos::foundation::counts::v1::{UserFollow, event::Kind};
use sqlx::Row;

#[derive(Debug, Clone)]
pub struct FollowsStore {
    db: Database,
    relay: Relay,
}

impl FollowsStore {
    pub fn new(db: Database, relay: Relay) -> Self {
        Self { db, relay }
    }

    /// Seeds the follows of the seed dataset into an empty store, without events: the counts
    /// service seeds the matching aggregates itself.
    pub async fn seed(&self, seed: &Seed) -> Result<(), sqlx::Error> {
        let mut tx = self.db.pool.begin().await?;
        let existing: i64 = sqlx::query("SELECT COUNT(*) AS n FROM follows")
            .fetch_one(&mut *tx)
            .await?
            .try_get("n")?;
        if existing > 0 {
            return Ok(());
        }
        for link in &seed.follows {
            sqlx::query(
                "INSERT INTO follows (follower_id, followee_id, create_time_us) VALUES ($1, $2, $3)",
            )
            .bind(link.from.clone())
            .bind(link.to.clone())
            .bind(link.time_us)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        tracing::info!(follows = seed.follows.len(), "seeded follows");
        Ok(())
    }

    /// Adds or removes a follow; returns whether anything changed. A change and its event
    /// commit together.
    pub async fn set(&self, follower: &str, followee: &str, on: bool) -> Result<bool, sqlx::Error> {
        let mut tx = self.db.pool.begin().await?;
        // The write comes first so that SQLite takes its write lock at the start.
        let changed = if on {
            sqlx::query(
                "INSERT INTO follows (follower_id, followee_id, create_time_us) VALUES ($1, $2, $3)
                 ON CONFLICT (follower_id, followee_id) DO NOTHING",
            )
            .bind(follower.to_owned())
            .bind(followee.to_owned())
            .bind(time::now_us())
            .execute(&mut *tx)
            .await?
            .rows_affected()
        } else {
            sqlx::query("DELETE FROM follows WHERE follower_id = $1 AND followee_id = $2")
                .bind(follower.to_owned())
                .bind(followee.to_owned())
                .execute(&mut *tx)
                .await?
                .rows_affected()
        } == 1;
        if changed {
            let follow = UserFollow {
                follower_id: follower.to_owned(),
                followee_id: followee.to_owned(),
            };
            let event = if on {
                Kind::UserFollowed(follow)
            } else {
                Kind::UserUnfollowed(follow)
            };
            outbox::enqueue(&mut tx, event).await?;
        }
        tx.commit().await?;
        if changed {
            self.relay.notify();
        }
        Ok(changed)
    }

    /// For each followee id, in request order: whether the follower follows them.
    pub async fn following(
        &self,
        follower: &str,
        followees: &[String],
    ) -> Result<Vec<bool>, sqlx::Error> {
        if followees.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT followee_id FROM follows WHERE follower_id = $1 AND followee_id IN ({})",
            placeholders(2, followees.len())
        );
        let mut params = vec![Param::Text(follower)];
        params.extend(followees.iter().map(|id| Param::Text(id)));
        let found: HashSet<String> = self
            .db
            .read(&sql, &params, |row| row.text("followee_id"))
            .await?
            .into_iter()
            .collect();
        Ok(followees.iter().map(|id| found.contains(id)).collect())
    }

    /// For each (follower, followee) pair, in request order: whether the follower follows the
    /// followee. One statement for the pairs of many followers.
    pub async fn following_of_pairs(
        &self,
        pairs: &[(String, String)],
    ) -> Result<Vec<bool>, sqlx::Error> {
        if pairs.is_empty() {
            return Ok(Vec::new());
        }
        let values = pair_placeholders(pairs.len());
        let sql = format!(
            "SELECT follower_id, followee_id FROM follows WHERE (follower_id, followee_id) IN (VALUES {values})"
        );
        let params: Vec<Param<'_>> = pairs
            .iter()
            .flat_map(|(follower, followee)| [Param::Text(follower), Param::Text(followee)])
            .collect();
        let found: HashSet<(String, String)> = self
            .db
            .read(&sql, &params, |row| {
                Ok::<_, sqlx::Error>((row.text("follower_id")?, row.text("followee_id")?))
            })
            .await?
            .into_iter()
            .collect();
        Ok(pairs.iter().map(|pair| found.contains(pair)).collect())
    }

    /// One page of the users a user follows, newest first, and the cursor of the next page.
    pub async fn followees(
        &self,
        follower: &str,
        after: &Cursor,
        page_size: i64,
    ) -> Result<(Vec<(String, i64)>, Option<Cursor>), sqlx::Error> {
        let rows = sqlx::query(
            "SELECT followee_id, create_time_us FROM follows
             WHERE follower_id = $1
               AND (create_time_us < $2 OR (create_time_us = $2 AND followee_id < $3))
             ORDER BY create_time_us DESC, followee_id DESC
             LIMIT $4",
        )
        .bind(follower.to_owned())
        .bind(after.time_us)
        .bind(after.id.clone())
        .bind(page_size + 1)
        .fetch_all(&self.db.pool)
        .await?;
        let followees = rows
            .iter()
            .map(|row| Ok((row.try_get("followee_id")?, row.try_get("create_time_us")?)))
            .collect::<Result<Vec<(String, i64)>, sqlx::Error>>()?;
        Ok(page::split(followees, page_size, |(id, time_us)| Cursor {
            time_us: *time_us,
            id: id.clone(),
        }))
    }
}
