//! The whole topology in one process: each service runs as it would on its own (its own gRPC
//! and metrics ports, its own database), wired to the others by URL. `cargo run -p topology`
//! is the one command that brings up everything locally; tests start it on ephemeral ports.

use std::{
    net::SocketAddr,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::Context;
use foundation_kit::DatabaseSettings;
use service_runtime::{Listeners, ServerSettings, spawn::Running};

/// How to run the topology.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where the SQLite files go; `None` keeps every database in memory.
    pub data_dir: Option<PathBuf>,
    /// Seed the databases with the deterministic dataset.
    pub seed: bool,
    pub seed_users: u32,
    pub seed_tracks: u32,
    /// The address every port is bound on; port 0 everywhere when `ephemeral`.
    pub host: std::net::IpAddr,
    /// Bind ephemeral ports instead of the default ones (for tests).
    pub ephemeral: bool,
    /// The gateways' `fanout.coalesce`: foundation work shared between concurrent requests.
    pub coalesce: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            data_dir: None,
            seed: true,
            seed_users: 1000,
            seed_tracks: 5000,
            host: [127, 0, 0, 1].into(),
            ephemeral: false,
            coalesce: true,
        }
    }
}

/// The running services.
#[derive(Debug)]
pub struct Topology {
    pub counts: Running,
    pub tracks: Running,
    pub likes: Running,
    pub follows: Running,
    pub consumer_gateway: Running,
    pub creator_gateway: Running,
}

impl Options {
    fn database(&self, name: &str) -> DatabaseSettings {
        match &self.data_dir {
            Some(dir) => DatabaseSettings {
                url: format!("sqlite://{}", dir.join(format!("{name}.db")).display()),
                max_connections: 4,
            },
            None => DatabaseSettings {
                url: "sqlite::memory:".into(),
                max_connections: 1,
            },
        }
    }

    async fn listeners(&self, server: &ServerSettings) -> anyhow::Result<Listeners> {
        let at = |addr: SocketAddr| {
            SocketAddr::new(self.host, if self.ephemeral { 0 } else { addr.port() })
        };
        let settings = ServerSettings {
            grpc_addr: at(server.grpc_addr),
            metrics_addr: at(server.metrics_addr),
            ..server.clone()
        };
        Ok(Listeners::bind(&settings).await?)
    }
}

impl Topology {
    /// Starts every service; returns once all of them listen.
    pub async fn start(options: Options) -> anyhow::Result<Self> {
        if let Some(dir) = &options.data_dir {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }

        let mut settings = counts::Settings::defaults();
        settings.database = options.database("counts");
        settings.seed.enabled = options.seed;
        settings.seed.users = options.seed_users;
        settings.seed.tracks = options.seed_tracks;
        let listeners = options.listeners(&settings.server).await?;
        let counts = Running::start("counts", listeners, move |listeners, shutdown| {
            counts::run(settings, listeners, shutdown)
        })?;
        let counts_url = counts.url();

        let mut settings = tracks::Settings::defaults();
        settings.database = options.database("tracks");
        settings.seed.enabled = options.seed;
        settings.seed.users = options.seed_users;
        settings.seed.tracks = options.seed_tracks;
        settings.outbox.counts_url.clone_from(&counts_url);
        let listeners = options.listeners(&settings.server).await?;
        let tracks = Running::start("tracks", listeners, move |listeners, shutdown| {
            tracks::run(settings, listeners, shutdown)
        })?;

        let mut settings = likes::Settings::defaults();
        settings.database = options.database("likes");
        settings.seed.enabled = options.seed;
        settings.seed.users = options.seed_users;
        settings.seed.tracks = options.seed_tracks;
        settings.outbox.counts_url.clone_from(&counts_url);
        let listeners = options.listeners(&settings.server).await?;
        let likes = Running::start("likes", listeners, move |listeners, shutdown| {
            likes::run(settings, listeners, shutdown)
        })?;

        let mut settings = follows::Settings::defaults();
        settings.database = options.database("follows");
        settings.seed.enabled = options.seed;
        settings.seed.users = options.seed_users;
        settings.seed.tracks = options.seed_tracks;
        settings.outbox.counts_url = counts_url;
        let listeners = options.listeners(&settings.server).await?;
        let follows = Running::start("follows", listeners, move |listeners, shutdown| {
            follows::run(settings, listeners, shutdown)
        })?;

        let mut settings = consumer_gateway::Settings::defaults();
        settings.fanout.coalesce = options.coalesce;
        settings.upstreams.tracks.url = tracks.url();
        settings.upstreams.likes.url = likes.url();
        settings.upstreams.follows.url = follows.url();
        settings.upstreams.counts.url = counts.url();
        let listeners = options.listeners(&settings.server).await?;
        let consumer_gateway =
            Running::start("consumer-gateway", listeners, move |listeners, shutdown| {
                consumer_gateway::run(settings, listeners, shutdown)
            })?;

        let mut settings = creator_gateway::Settings::defaults();
        settings.fanout.coalesce = options.coalesce;
        settings.upstreams.tracks.url = tracks.url();
        settings.upstreams.likes.url = likes.url();
        settings.upstreams.counts.url = counts.url();
        let listeners = options.listeners(&settings.server).await?;
        let creator_gateway =
            Running::start("creator-gateway", listeners, move |listeners, shutdown| {
                creator_gateway::run(settings, listeners, shutdown)
            })?;

        Ok(Self {
            counts,
            tracks,
            likes,
            follows,
            consumer_gateway,
            creator_gateway,
        })
    }

    /// Waits until every service reports SERVING on `grpc.health.v1`, which happens once its
    /// database is migrated and seeded.
    pub async fn wait_ready(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        for service in self.services() {
            service
                .wait_serving(deadline)
                .await
                .map_err(anyhow::Error::msg)?;
        }
        Ok(())
    }

    /// Every service, in start order.
    pub fn services(&self) -> [&Running; 6] {
        [
            &self.counts,
            &self.tracks,
            &self.likes,
            &self.follows,
            &self.consumer_gateway,
            &self.creator_gateway,
        ]
    }

    /// Stops every service and waits until each has drained; the first failure is returned.
    pub async fn stop(self) -> anyhow::Result<()> {
        let mut outcome = Ok(());
        // Gateways first, then the writers, so that their relays stop before counts does.
        for service in [
            self.consumer_gateway,
            self.creator_gateway,
            self.tracks,
            self.likes,
            self.follows,
            self.counts,
        ] {
            let name = service.name;
            if let Err(error) = service.stop().await
                && outcome.is_ok()
            {
                outcome = Err(anyhow::anyhow!("{name}: {error}"));
            }
        }
        outcome
    }
}
