//! `gatewayctl usage`: which BFF client reads which path of a gateway's view, from the
//! gateways' own metrics. Every replica of a gateway exposes, on its Prometheus page,
//!
//! ```text
//! gateway_view_info{view="consumer.v1.Track"} 1
//! gateway_field_reads_total{client="web-bff",path="title"} 12
//! gateway_field_last_read_seconds{client="web-bff",path="title"} 1796000000
//! ```
//!
//! (`client` is the BFF's client name or `unknown`, `path` a leaf path of the view in snake_case,
//! the gauge the Unix second of the last served read). A replica counts only what it served, so
//! the command scrapes every replica, sums the reads of each view, client and path, and keeps the
//! latest last read. The result prints as one table per view and can be exported as a usage
//! snapshot, the evidence `gatewayctl contract` weighs a removed path against.
//!
//! # The usage snapshot, version 1
//!
//! ```json
//! {
//!   "version": 1,
//!   "taken_at": 1796000000,
//!   "sources": ["http://10.0.0.7:9051/metrics", "http://10.0.0.8:9051/metrics"],
//!   "views": {
//!     "consumer.v1.Track": {
//!       "web-bff": {
//!         "creator.followers_count": { "reads": 12, "last_read": 1795999000 },
//!         "title": { "reads": 40, "last_read": 1796000000 }
//!       }
//!     }
//!   }
//! }
//! ```
//!
//! `version` is 1 (a reader refuses any other). `taken_at` is when the scrape ran, in Unix
//! seconds. `sources` names the pages scraped (for people; nothing reads it). `views` maps a
//! view's full message name to its clients, each client to the leaf paths it read, each path to
//! its `reads` (summed over the replicas) and `last_read` (Unix seconds, the latest of the
//! replicas; `null` when no replica exposed the gauge, which the contract check counts as a
//! read at `taken_at`). Only paths read at least once appear (the gateways expose the others
//! with zero reads and a last read of 0), so a view nobody read has an empty client map.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
    time::Duration,
};

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use serde::{Deserialize, Serialize};

use crate::contract;

/// The version of the snapshot format this gatewayctl writes and reads.
pub const SNAPSHOT_VERSION: u32 = 1;

/// How long one replica may take to answer its metrics page.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest metrics page accepted: far beyond what a gateway exposes.
const MAX_PAGE_BYTES: usize = 64 << 20;

/// A usage snapshot (see the module documentation for the format).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub version: u32,
    /// When the scrape ran, in Unix seconds.
    pub taken_at: u64,
    /// The metrics pages scraped.
    #[serde(default)]
    pub sources: Vec<String>,
    /// View → client → leaf path → usage.
    pub views: BTreeMap<String, BTreeMap<String, BTreeMap<String, PathUsage>>>,
}

/// One client's reads of one path of one view.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathUsage {
    /// Reads served, summed over the replicas.
    pub reads: u64,
    /// The Unix second of the last served read, the latest over the replicas; `None` when no
    /// replica exposed it.
    pub last_read: Option<u64>,
}

impl PathUsage {
    /// Whether this records a read at all: the gateways expose every leaf path of every client
    /// they saw, with zero reads and a last read of 0 for the paths never read.
    pub fn was_read(&self) -> bool {
        self.reads > 0 || self.last_read.is_some()
    }

    /// Adds `other`'s reads (of another series or replica): reads sum, the latest read stays.
    pub fn absorb(&mut self, other: PathUsage) {
        self.reads += other.reads;
        self.last_read = self.last_read.max(other.last_read);
    }
}

impl Snapshot {
    /// Reads a snapshot file, refusing other format versions.
    pub fn read(file: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read usage snapshot {}", file.display()))?;
        Self::parse(&text).with_context(|| format!("usage snapshot {}", file.display()))
    }

    /// Parses a snapshot document, refusing other format versions.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        #[derive(Deserialize)]
        struct Versioned {
            version: u32,
        }
        let versioned: Versioned =
            serde_json::from_str(text).context("not a usage snapshot (no \"version\")")?;
        if versioned.version != SNAPSHOT_VERSION {
            bail!(
                "format version {} is not the version {SNAPSHOT_VERSION} this gatewayctl reads",
                versioned.version
            );
        }
        serde_json::from_str(text).context("not a version 1 usage snapshot")
    }

    /// The snapshot as pretty JSON, keys sorted, with a final newline.
    pub fn to_json(&self) -> String {
        let mut text = serde_json::to_string_pretty(self).expect("a snapshot serializes");
        text.push('\n');
        text
    }
}

/// Scrapes every page of `urls`, sums what they say and prints one table per view; with
/// `export`, also writes the usage snapshot there. `now` (Unix seconds) is the snapshot's
/// `taken_at` and the reference of the table's "ago".
pub async fn usage(urls: &[String], export: Option<&Path>, now: u64) -> anyhow::Result<String> {
    if urls.is_empty() {
        bail!("give at least one --metrics page");
    }
    let pages = futures::future::try_join_all(urls.iter().map(|url| async move {
        let text = scrape(url).await?;
        parse_page(&text).with_context(|| format!("the metrics page {url}"))
    }))
    .await?;
    let replicas = replicas_per_view(&pages);
    let snapshot = merge(urls, &pages, now);
    let mut text = render(&snapshot, &replicas);
    if let Some(file) = export {
        std::fs::write(file, snapshot.to_json())
            .with_context(|| format!("cannot write {}", file.display()))?;
        text.push_str(&format!("usage snapshot written to {}\n", file.display()));
    }
    Ok(text)
}

/// `GET url` over HTTP/1.1 (hyper's client connection, one per page); only `200 OK` is a page.
async fn scrape(url: &str) -> anyhow::Result<String> {
    let uri: http::Uri = url.parse().with_context(|| format!("{url} is not a URL"))?;
    if uri.scheme_str() != Some("http") {
        bail!("{url}: only http:// metrics pages can be scraped");
    }
    let host = uri
        .host()
        .with_context(|| format!("{url} has no host"))?
        .trim_matches(['[', ']'])
        .to_owned();
    let port = uri.port_u16().unwrap_or(80);
    let exchange = async {
        let stream = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .with_context(|| format!("cannot connect to {url}"))?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .with_context(|| format!("{url}: HTTP handshake"))?;
        let connection = tokio::spawn(connection);
        let request = http::Request::get(uri.path_and_query().map_or("/", |path| path.as_str()))
            .header(
                http::header::HOST,
                uri.authority().map_or(host.as_str(), |a| a.as_str()),
            )
            .header(
                http::header::ACCEPT,
                "application/openmetrics-text, text/plain",
            )
            .body(Empty::<Bytes>::new())
            .with_context(|| format!("{url}: the request"))?;
        let result = async {
            let response = sender
                .send_request(request)
                .await
                .with_context(|| format!("{url}: no response"))?;
            if response.status() != http::StatusCode::OK {
                bail!("{url} answered {}", response.status());
            }
            let body = Limited::new(response.into_body(), MAX_PAGE_BYTES)
                .collect()
                .await
                .map_err(|error| anyhow::anyhow!("{url}: the body: {error}"))?
                .to_bytes();
            String::from_utf8(body.to_vec()).with_context(|| format!("{url}: not UTF-8 text"))
        }
        .await;
        connection.abort();
        result
    };
    tokio::time::timeout(SCRAPE_TIMEOUT, exchange)
        .await
        .unwrap_or_else(|_| {
            Err(anyhow::anyhow!(
                "{url}: no answer within {SCRAPE_TIMEOUT:?}"
            ))
        })
}

/// What one replica's page says about field reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Page {
    /// The views of `gateway_view_info`.
    pub(crate) views: BTreeSet<String>,
    /// View → client → path → usage, summed over the series of the page (a series may carry
    /// labels besides `client` and `path`).
    pub(crate) usage: BTreeMap<String, BTreeMap<String, BTreeMap<String, PathUsage>>>,
}

/// One sample line: the metric name, its labels, its value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Sample {
    pub(crate) name: String,
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) value: f64,
}

/// Parses the gateway families of an OpenMetrics (or Prometheus) text page; other families
/// are skipped. A read series names its view by a `view` label, or else is of the page's one
/// `gateway_view_info` view.
pub(crate) fn parse_page(text: &str) -> anyhow::Result<Page> {
    let mut page = Page::default();
    let mut reads = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let sample = parse_sample(line).with_context(|| format!("line {}", number + 1))?;
        match sample.name.as_str() {
            "gateway_view_info" => {
                let view = sample.labels.get("view").with_context(|| {
                    format!("line {}: gateway_view_info without a view", number + 1)
                })?;
                page.views.insert(view.clone());
            }
            "gateway_field_reads_total" | "gateway_field_last_read_seconds" => {
                reads.push((number + 1, sample));
            }
            _ => {}
        }
    }
    for view in &page.views {
        page.usage.entry(view.clone()).or_default();
    }
    for (line, mut sample) in reads {
        let view = match sample.labels.remove("view") {
            Some(view) => view,
            None => match (page.views.len(), page.views.first()) {
                (1, Some(view)) => view.clone(),
                (0, _) => bail!(
                    "line {line}: {} names no view and the page has no gateway_view_info",
                    sample.name
                ),
                _ => bail!(
                    "line {line}: {} names no view and the page has several gateway_view_info",
                    sample.name
                ),
            },
        };
        let client = sample
            .labels
            .remove("client")
            .unwrap_or_else(|| "unknown".into());
        let path = sample
            .labels
            .remove("path")
            .with_context(|| format!("line {line}: {} without a path", sample.name))?;
        if !sample.value.is_finite() || sample.value < 0.0 {
            bail!("line {line}: {} is {}", sample.name, sample.value);
        }
        // Counters and gauges are integers; a float rendering of one is truncated. A last read
        // of 0 is a path never read.
        let value = sample.value as u64;
        let usage = if sample.name == "gateway_field_reads_total" {
            PathUsage {
                reads: value,
                last_read: None,
            }
        } else {
            PathUsage {
                reads: 0,
                last_read: (value > 0).then_some(value),
            }
        };
        page.usage
            .entry(view)
            .or_default()
            .entry(client)
            .or_default()
            .entry(path)
            .or_default()
            .absorb(usage);
    }
    // Only what was read is usage; a client that read nothing has none.
    for clients in page.usage.values_mut() {
        for paths in clients.values_mut() {
            paths.retain(|_, usage| usage.was_read());
        }
        clients.retain(|_, paths| !paths.is_empty());
    }
    Ok(page)
}

/// Parses `name{label="value",…} value [timestamp] [# exemplar]`.
pub(crate) fn parse_sample(line: &str) -> anyhow::Result<Sample> {
    let name_end = line.find(['{', ' ']).unwrap_or(line.len());
    let name = line[..name_end].to_owned();
    if name.is_empty() {
        bail!("a sample without a metric name");
    }
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(inner) = rest.strip_prefix('{') {
        let mut chars = inner.char_indices().peekable();
        loop {
            while chars.next_if(|(_, c)| *c == ' ').is_some() {}
            match chars.peek() {
                Some((index, '}')) => {
                    rest = &inner[index + 1..];
                    break;
                }
                None => bail!("{name}: the labels do not end"),
                _ => {}
            }
            let mut key = String::new();
            while let Some((_, c)) = chars.next_if(|(_, c)| c.is_ascii_alphanumeric() || *c == '_')
            {
                key.push(c);
            }
            if key.is_empty() || chars.next().map(|(_, c)| c) != Some('=') {
                bail!("{name}: a label is not name=\"value\"");
            }
            if chars.next().map(|(_, c)| c) != Some('"') {
                bail!("{name}: the value of label {key} is not quoted");
            }
            let mut value = String::new();
            loop {
                match chars.next().map(|(_, c)| c) {
                    None => bail!("{name}: the value of label {key} does not end"),
                    Some('"') => break,
                    Some('\\') => match chars.next().map(|(_, c)| c) {
                        Some('\\') => value.push('\\'),
                        Some('"') => value.push('"'),
                        Some('n') => value.push('\n'),
                        // Not an escape OpenMetrics defines: kept as written.
                        Some(other) => {
                            value.push('\\');
                            value.push(other);
                        }
                        None => bail!("{name}: the value of label {key} does not end"),
                    },
                    Some(c) => value.push(c),
                }
            }
            labels.insert(key, value);
            while chars.next_if(|(_, c)| *c == ' ').is_some() {}
            if chars.next_if(|(_, c)| *c == ',').is_none()
                && !matches!(chars.peek(), Some((_, '}')))
            {
                bail!("{name}: labels are not separated by commas");
            }
        }
    }
    let value = rest
        .split_whitespace()
        .next()
        .with_context(|| format!("{name}: a sample without a value"))?;
    let value = match value {
        "+Inf" | "Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        other => other
            .parse()
            .with_context(|| format!("{name}: {other:?} is not a number"))?,
    };
    Ok(Sample {
        name,
        labels,
        value,
    })
}

/// How many of the pages expose each view.
fn replicas_per_view(pages: &[Page]) -> BTreeMap<String, usize> {
    let mut replicas = BTreeMap::new();
    for page in pages {
        for view in page.usage.keys() {
            *replicas.entry(view.clone()).or_insert(0) += 1;
        }
    }
    replicas
}

/// The snapshot of several replicas' pages: reads summed, the latest last read kept.
pub(crate) fn merge(urls: &[String], pages: &[Page], now: u64) -> Snapshot {
    let mut views: BTreeMap<String, BTreeMap<String, BTreeMap<String, PathUsage>>> =
        BTreeMap::new();
    for page in pages {
        for (view, clients) in &page.usage {
            let merged = views.entry(view.clone()).or_default();
            for (client, paths) in clients {
                let merged = merged.entry(client.clone()).or_default();
                for (path, usage) in paths {
                    merged.entry(path.clone()).or_default().absorb(*usage);
                }
            }
        }
    }
    Snapshot {
        version: SNAPSHOT_VERSION,
        taken_at: now,
        sources: urls.to_vec(),
        views,
    }
}

/// One table per view: a row per path (the view's known leaf paths too, so that unread ones
/// show), a column per client, each cell the reads and how long ago the last one was.
pub(crate) fn render(snapshot: &Snapshot, replicas: &BTreeMap<String, usize>) -> String {
    let mut text = String::new();
    for (view, clients) in &snapshot.views {
        let count = replicas.get(view).copied().unwrap_or(0);
        text.push_str(&format!(
            "{view} ({count} {})\n",
            if count == 1 { "replica" } else { "replicas" }
        ));
        let mut paths: BTreeSet<String> = contract::known_leaf_paths(view).into_iter().collect();
        for usage in clients.values() {
            paths.extend(usage.keys().cloned());
        }
        if clients.is_empty() {
            text.push_str("  no reads recorded\n\n");
            continue;
        }
        let mut rows = vec![
            std::iter::once("path".to_owned())
                .chain(clients.keys().cloned())
                .collect::<Vec<_>>(),
        ];
        for path in &paths {
            let mut row = vec![path.clone()];
            for usage in clients.values() {
                row.push(match usage.get(path) {
                    None => "-".to_owned(),
                    Some(usage) => match usage.last_read {
                        Some(at) => format!("{} ({})", usage.reads, ago(snapshot.taken_at, at)),
                        None => usage.reads.to_string(),
                    },
                });
            }
            rows.push(row);
        }
        let widths: Vec<usize> = (0..rows[0].len())
            .map(|column| {
                rows.iter()
                    .map(|row| row[column].chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        for row in rows {
            let line = row
                .iter()
                .zip(&widths)
                .map(|(cell, width)| format!("{cell:<width$}"))
                .collect::<Vec<_>>()
                .join("  ");
            text.push_str("  ");
            text.push_str(line.trim_end());
            text.push('\n');
        }
        text.push('\n');
    }
    if snapshot.views.is_empty() {
        text.push_str("no gateway view on these pages\n");
    } else {
        text.push_str("cells: reads (time since the last read); -: not read\n");
    }
    text
}

/// How long before `now` the second `at` was, in the largest whole unit.
pub(crate) fn ago(now: u64, at: u64) -> String {
    let seconds = now.saturating_sub(at);
    match seconds {
        0..60 => "<1m ago".into(),
        60..3_600 => format!("{}m ago", seconds / 60),
        3_600..86_400 => format!("{}h ago", seconds / 3_600),
        _ => format!("{}d ago", seconds / 86_400),
    }
}

#[cfg(test)]
mod tests;
