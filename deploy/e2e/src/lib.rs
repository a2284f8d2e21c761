//! End-to-end scenarios over the public interfaces, written once and run against any running
//! topology given its endpoints: the in-process topology under `cargo test`, and the Compose
//! topology (`just compose-e2e`), where the chaos scenarios also stop, start and kill
//! containers, and the scaled Compose topology (`just compose-scale-e2e`, [`scale`]).
//!
//! Every scenario uses users and tracks of its own (or fresh uploads), so scenarios can run
//! against a topology that earlier runs or other scenarios have already changed.

pub use test_support::eventually;

pub mod abuse;
pub mod chaos;
pub mod scale;
pub mod scenarios;
pub mod twirp;

use std::time::Duration;

use authorization::token::mint_development_token;
use protos::{
    consumer::v1::consumer_gateway_client::ConsumerGatewayClient,
    creator::v1::creator_gateway_client::CreatorGatewayClient,
};
use tonic::{Request, metadata::MetadataValue, transport::Channel};

/// Where the topology's services listen (`http://host:port`). The scenarios call the gateways
/// only, as a BFF would; the foundation endpoints serve in-process checks, since the Compose
/// topology publishes no foundation port (unless deploy/compose.debug-ports.yaml is added).
#[derive(Debug, Clone)]
pub struct Endpoints {
    pub consumer: String,
    pub creator: String,
    pub tracks: String,
    pub likes: String,
    pub follows: String,
    pub counts: String,
}

impl Endpoints {
    /// The default ports on the loopback interface, each overridable by `E2E_<SERVICE>_URL`.
    pub fn from_env() -> Self {
        let url = |name: &str, port: u16| {
            std::env::var(format!("E2E_{name}_URL"))
                .unwrap_or_else(|_| format!("http://127.0.0.1:{port}"))
        };
        Self {
            consumer: url("CONSUMER", 50051),
            creator: url("CREATOR", 50052),
            tracks: url("TRACKS", 50061),
            likes: url("LIKES", 50062),
            follows: url("FOLLOWS", 50063),
            counts: url("COUNTS", 50064),
        }
    }

    pub async fn consumer(&self) -> ConsumerGatewayClient<Channel> {
        ConsumerGatewayClient::new(channel(&self.consumer).await)
    }

    pub async fn creator(&self) -> CreatorGatewayClient<Channel> {
        CreatorGatewayClient::new(channel(&self.creator).await)
    }
}

/// A lazily connecting channel, so that a scenario can hold clients across an outage.
pub async fn channel(url: &str) -> Channel {
    Channel::from_shared(url.to_owned())
        .unwrap_or_else(|error| panic!("bad endpoint {url}: {error}"))
        .connect_timeout(Duration::from_secs(2))
        .connect_lazy()
}

/// A request with a development token for `user` (anonymous when `None`) in `territory`.
pub fn signed<T>(message: T, user: Option<&str>, territory: &str) -> Request<T> {
    let mut request = Request::new(message);
    let token = mint_development_token(user, territory, 600);
    request.metadata_mut().insert(
        "authorization",
        MetadataValue::try_from(format!("Bearer {token}")).expect("a token is ASCII"),
    );
    request
}

/// A FieldMask of `paths`.
pub fn mask(paths: &[&str]) -> Option<prost_types::FieldMask> {
    Some(prost_types::FieldMask {
        paths: paths.iter().map(|p| (*p).to_owned()).collect(),
    })
}

/// A name no earlier run used, for users and titles of one scenario run.
pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{prefix}_{:x}", nanos & 0xffff_ffff_ffff)
}
