//! `gatewayctl`: a command-line client for BFF authors and platform engineers exploring the
//! domain gateways. It mints development tokens, calls any unary RPC of either gateway with a
//! read mask (in path or JSON form) and prints canonical protobuf JSON plus the degraded fields,
//! shows the fanout plan of a mask, and uploads and downloads audio with a progress bar. For
//! the BFF contract, `usage` sums which client reads which view path from every replica's
//! metrics page (and exports it as a usage snapshot), and `contract` refuses a proto change
//! that removes a path a snapshot shows read (see the `usage` and `contract` modules).
//!
//! Calls go over gRPC. `call` needs no generated code per method: it resolves the method in the
//! gateways' descriptor sets (built into the binary), turns the JSON request into a dynamic
//! message with `prost-reflect`, and sends it with a codec for dynamic messages, so every unary
//! RPC, today's and tomorrow's, is callable. The streaming RPCs have their own commands
//! (`upload`, `download`), which use the generated clients.
//!
//! The library holds the commands so that tests call them directly; `main.rs` only parses the
//! command line and prints.

pub mod contract;
mod dynamic;
mod transfer;
pub mod usage;

use std::{
    path::PathBuf,
    time::{SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use prost_reflect::{DescriptorPool, MethodDescriptor, SerializeOptions};
use serde_json::Value;
use tonic::transport::Channel;

pub use dynamic::call_dynamic;

/// The command line.
#[derive(Debug, Parser)]
#[command(
    name = "gatewayctl",
    version,
    about = "A command-line client for the domain gateways"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Where the gateways are and who is calling.
#[derive(Debug, Clone, Args)]
pub struct Global {
    /// The consumer gateway's gRPC endpoint.
    #[arg(
        long,
        global = true,
        env = "GATEWAYCTL_CONSUMER_URL",
        default_value = "http://127.0.0.1:50051"
    )]
    pub consumer_url: String,
    /// The creator gateway's gRPC endpoint.
    #[arg(
        long,
        global = true,
        env = "GATEWAYCTL_CREATOR_URL",
        default_value = "http://127.0.0.1:50052"
    )]
    pub creator_url: String,
    /// The bearer token sent with every call. Without it, a development token is minted for
    /// `--user` in `--territory` (it only works against the development secret).
    #[arg(long, global = true, env = "TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// The user of a minted development token (none: an anonymous listener).
    #[arg(long, global = true)]
    pub user: Option<String>,
    /// The territory (ISO 3166-1 alpha-2) of a minted development token.
    #[arg(long, global = true, default_value = "US")]
    pub territory: String,
    /// The BFF client a minted development token is issued to (its `azp` claim), which the
    /// gateways count field usage by.
    #[arg(long, global = true)]
    pub client: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Mint a development token (HS256 with the development secret, issuer and audience;
    /// `--client` names the BFF client it is issued to).
    Token {
        /// The token's subject; omit for an anonymous listener.
        #[arg(long)]
        user: Option<String>,
        #[arg(long, default_value = "US")]
        territory: String,
        /// Seconds until the token expires.
        #[arg(long, default_value_t = 3600)]
        ttl: u64,
    },
    /// Call any unary RPC of a gateway and print the response as canonical protobuf JSON.
    Call {
        /// Which gateway.
        gateway: Gateway,
        /// The RPC, e.g. `GetTrack`.
        method: String,
        /// The request as JSON (protobuf JSON names or field names), e.g.
        /// `{"track_id":"trk_00001"}`.
        #[arg(long, short = 'd', default_value = "{}")]
        data: String,
        /// The request's field mask (`read_mask`, or `update_mask` for UpdateTrack), in path
        /// form (`creator.followers_count,title`) or JSON form (`creator.followersCount,title`).
        #[arg(long)]
        mask: Option<String>,
    },
    /// Show the foundation calls a read mask plans on the consumer gateway (ExplainReadMask).
    Explain {
        #[arg(long, default_value = "")]
        mask: String,
    },
    /// Upload an audio file as a new track of the token's user (creator gateway).
    Upload {
        file: PathBuf,
        /// The track's title (default: the file name).
        #[arg(long)]
        title: Option<String>,
        #[arg(long, default_value = "")]
        genre: String,
        #[arg(long)]
        private: bool,
        #[arg(long)]
        downloadable: bool,
    },
    /// Download a track's audio (consumer gateway).
    Download {
        track_id: String,
        #[arg(long, short = 'o')]
        output: PathBuf,
        /// The secret token of a private track.
        #[arg(long)]
        secret_token: Option<String>,
    },
    /// Show which client reads which path of each gateway view, summed over the replicas'
    /// metrics pages, and optionally export it as a usage snapshot for `contract`.
    Usage {
        /// A replica's Prometheus page, e.g. `http://127.0.0.1:9051/metrics`; give every
        /// replica of the gateway (a replica counts only the reads it served).
        #[arg(long = "metrics", required = true, value_name = "URL")]
        metrics: Vec<String>,
        /// Write the usage snapshot (JSON, format version 1) to this file.
        #[arg(long, value_name = "FILE")]
        export: Option<PathBuf>,
    },
    /// Fail when a proto change removes or renames a view path that a usage snapshot shows a
    /// client read within the window before the snapshot was taken.
    Contract {
        /// The descriptor set before the change (`buf build -o base.binpb`).
        #[arg(long, value_name = "FILE")]
        base: PathBuf,
        /// The descriptor set after the change.
        #[arg(long, value_name = "FILE")]
        head: PathBuf,
        /// A view message to check; repeatable.
        #[arg(long = "view", value_name = "MESSAGE", default_values = contract::DEFAULT_VIEWS)]
        views: Vec<String>,
        /// A usage snapshot (`gatewayctl usage --export`); repeatable.
        #[arg(long = "usage", value_name = "FILE")]
        usage: Vec<PathBuf>,
        /// How recent, before a snapshot was taken, a read must be to count: `30d`, `12h`.
        #[arg(long, default_value = "30d", value_parser = contract::Window::parse)]
        window: contract::Window,
    },
}

/// The two gateways.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Gateway {
    Consumer,
    Creator,
}

impl Gateway {
    /// The fully qualified protobuf service.
    pub fn service(self) -> &'static str {
        match self {
            Self::Consumer => "consumer.v1.ConsumerGateway",
            Self::Creator => "creator.v1.CreatorGateway",
        }
    }

    fn descriptor(self) -> &'static [u8] {
        match self {
            Self::Consumer => protos::descriptors::CONSUMER,
            Self::Creator => protos::descriptors::CREATOR,
        }
    }

    fn url(self, global: &Global) -> &str {
        match self {
            Self::Consumer => &global.consumer_url,
            Self::Creator => &global.creator_url,
        }
    }
}

impl Global {
    /// The bearer token: `--token` (or `$TOKEN`), else a development token for `--user`.
    pub fn bearer(&self) -> String {
        self.token.clone().unwrap_or_else(|| {
            authorization::token::mint_development_client_token(
                self.user.as_deref(),
                &self.territory,
                600,
                self.client.as_deref(),
            )
        })
    }
}

/// Runs one command and returns what it prints on standard output.
pub async fn run(cli: Cli) -> anyhow::Result<String> {
    let global = cli.global;
    match cli.command {
        Command::Token {
            user,
            territory,
            ttl,
        } => Ok(format!(
            "{}\n",
            authorization::token::mint_development_client_token(
                user.as_deref(),
                &territory,
                ttl,
                global.client.as_deref()
            )
        )),
        Command::Call {
            gateway,
            method,
            data,
            mask,
        } => {
            let outcome = call(&global, gateway, &method, &data, mask.as_deref()).await?;
            Ok(outcome.render())
        }
        Command::Explain { mask } => explain(&global, &mask).await,
        Command::Upload {
            file,
            title,
            genre,
            private,
            downloadable,
        } => {
            let title = match title {
                Some(title) => title,
                None => file
                    .file_stem()
                    .map(|stem| stem.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "untitled".into()),
            };
            let upload = transfer::Upload {
                title,
                genre,
                private,
                downloadable,
            };
            let channel = connect(&global.creator_url).await?;
            let track = transfer::upload(channel, &global.bearer(), &file, upload).await?;
            Ok(format!("{track}\n"))
        }
        Command::Download {
            track_id,
            output,
            secret_token,
        } => {
            let channel = connect(&global.consumer_url).await?;
            let bytes =
                transfer::download(channel, &global.bearer(), &track_id, secret_token, &output)
                    .await?;
            Ok(format!("{bytes} bytes written to {}\n", output.display()))
        }
        Command::Usage { metrics, export } => {
            usage::usage(&metrics, export.as_deref(), unix_now()).await
        }
        Command::Contract {
            base,
            head,
            views,
            usage,
            window,
        } => contract::contract(&base, &head, &views, &usage, window, unix_now()),
    }
}

/// The present in Unix seconds.
fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

/// The result of [`call`]: the response as canonical JSON and the degraded mask paths.
#[derive(Debug, Clone, PartialEq)]
pub struct CallOutcome {
    pub response: Value,
    /// The response pretty-printed in field order (as the `.proto` declares the fields).
    pub pretty: String,
    pub degraded: Vec<String>,
}

impl CallOutcome {
    /// The response, pretty-printed, then `degraded: …` when some fields were left out.
    pub fn render(&self) -> String {
        let mut text = self.pretty.clone();
        text.push('\n');
        if !self.degraded.is_empty() {
            text.push_str(&format!("degraded: {}\n", self.degraded.join(",")));
        }
        text
    }
}

/// Calls `method` of `gateway` with the JSON request `data` and, when given, the field mask
/// `mask` (path or JSON form).
pub async fn call(
    global: &Global,
    gateway: Gateway,
    method: &str,
    data: &str,
    mask: Option<&str>,
) -> anyhow::Result<CallOutcome> {
    let method = resolve(gateway, method)?;
    let mut request: Value = serde_json::from_str(data).context("--data is not valid JSON")?;
    if let Some(mask) = mask {
        let field = method
            .input()
            .fields()
            .find(|field| {
                field
                    .kind()
                    .as_message()
                    .is_some_and(|message| message.full_name() == "google.protobuf.FieldMask")
            })
            .with_context(|| format!("{} takes no field mask", method.name()))?;
        let Value::Object(fields) = &mut request else {
            bail!("--data must be a JSON object");
        };
        fields.remove(field.name());
        fields.insert(
            field.json_name().to_owned(),
            Value::String(mask_to_json(mask)),
        );
    }
    let channel = connect(gateway.url(global)).await?;
    let (response, degraded) = call_dynamic(channel, &method, &request, &global.bearer()).await?;
    let mut serializer = serde_json::Serializer::pretty(Vec::new());
    response
        .serialize_with_options(&mut serializer, &SerializeOptions::new())
        .context("cannot render the response as JSON")?;
    let pretty = String::from_utf8(serializer.into_inner())?;
    Ok(CallOutcome {
        response: serde_json::from_str(&pretty)?,
        pretty,
        degraded,
    })
}

/// The plan of `mask` on the consumer gateway, for people: the normalized mask and the
/// foundation calls it needs, stage by stage.
pub async fn explain(global: &Global, mask: &str) -> anyhow::Result<String> {
    let outcome = call(
        global,
        Gateway::Consumer,
        "ExplainReadMask",
        "{}",
        Some(mask),
    )
    .await?;
    let response = outcome.response;
    let mut text = format!(
        "read mask: {}\n",
        response["readMask"].as_str().unwrap_or("*")
    );
    text.push_str(response["text"].as_str().unwrap_or_default());
    if !text.ends_with('\n') {
        text.push('\n');
    }
    Ok(text)
}

/// The unary method `name` of `gateway` (a bare name like `GetTrack`, or the full
/// `package.Service/Method`).
pub fn resolve(gateway: Gateway, name: &str) -> anyhow::Result<MethodDescriptor> {
    let pool = DescriptorPool::decode(gateway.descriptor())
        .context("the built-in descriptor set does not decode")?;
    let service = pool
        .get_service_by_name(gateway.service())
        .context("the built-in descriptor set lacks the gateway")?;
    let bare = name.rsplit('/').next().unwrap_or(name);
    let Some(method) = service.methods().find(|method| method.name() == bare) else {
        let known: Vec<String> = service.methods().map(|m| m.name().to_owned()).collect();
        bail!(
            "{} has no method {bare:?}; it has {}",
            gateway.service(),
            known.join(", ")
        );
    };
    if method.is_client_streaming() || method.is_server_streaming() {
        bail!("{bare} streams: use `gatewayctl upload` or `gatewayctl download` instead of `call`");
    }
    Ok(method)
}

/// A mask in path form (`creator.followers_count`) or JSON form (`creator.followersCount`), as
/// the canonical JSON string (lowerCamelCase segments, comma-separated, no spaces).
pub fn mask_to_json(mask: &str) -> String {
    mask.split(',')
        .map(str::trim)
        .filter(|path| !path.is_empty())
        .map(|path| {
            path.split('.')
                .map(snake_to_camel)
                .collect::<Vec<_>>()
                .join(".")
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn snake_to_camel(segment: &str) -> String {
    let mut camel = String::with_capacity(segment.len());
    let mut upper = false;
    for c in segment.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            camel.extend(c.to_uppercase());
            upper = false;
        } else {
            camel.push(c);
        }
    }
    camel
}

async fn connect(url: &str) -> anyhow::Result<Channel> {
    Channel::from_shared(url.to_owned())
        .with_context(|| format!("bad endpoint {url}"))?
        .connect()
        .await
        .with_context(|| format!("cannot connect to {url}"))
}

#[cfg(test)]
mod tests;
