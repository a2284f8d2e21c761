//! Audio upload (creator gateway, client stream) and download (consumer gateway, server stream)
//! with progress bars. Both hold one chunk in memory at a time, whatever the file size.

use std::path::Path;

use anyhow::{Context, bail};
use futures::{StreamExt, stream};
use indicatif::{ProgressBar, ProgressStyle};
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, SerializeOptions};
use protos::{
    consumer::v1::{DownloadTrackRequest, consumer_gateway_client::ConsumerGatewayClient},
    creator::v1::{
        Track, UploadCommit, UploadTrackRequest, creator_gateway_client::CreatorGatewayClient,
        track::Visibility, upload_track_request::Part,
    },
};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::{Request, metadata::MetadataValue, transport::Channel};

/// Audio chunk size: well under the gateway's default `upload.max_chunk_bytes` (1 MiB).
const CHUNK_BYTES: usize = 256 * 1024;

/// The new track's writable fields.
#[derive(Debug, Clone)]
pub(crate) struct Upload {
    pub(crate) title: String,
    pub(crate) genre: String,
    pub(crate) private: bool,
    pub(crate) downloadable: bool,
}

fn bar(length: Option<u64>) -> ProgressBar {
    let (bar, template) = match length {
        Some(length) => (
            ProgressBar::new(length),
            "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} {eta}",
        ),
        None => (
            ProgressBar::no_length(),
            "{spinner} {bytes} {bytes_per_sec}",
        ),
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    bar
}

fn signed<T>(message: T, token: &str) -> anyhow::Result<Request<T>> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        MetadataValue::try_from(format!("Bearer {token}")).context("the token is not ASCII")?,
    );
    Ok(request)
}

/// What the upload stream reads next.
enum Next {
    Metadata(tokio::fs::File),
    Chunks(tokio::fs::File),
    Done,
}

/// Streams `file` as a new track and returns the stored track as canonical JSON.
pub(crate) async fn upload(
    channel: Channel,
    token: &str,
    file: &Path,
    upload: Upload,
) -> anyhow::Result<String> {
    let opened = tokio::fs::File::open(file)
        .await
        .with_context(|| format!("cannot open {}", file.display()))?;
    let length = opened.metadata().await?.len();
    let progress = bar(Some(length));
    let metadata = Track {
        title: upload.title,
        genre: upload.genre,
        visibility: if upload.private {
            Visibility::Private
        } else {
            Visibility::Public
        } as i32,
        downloadable: upload.downloadable,
        ..Track::default()
    };
    let state = (
        Next::Metadata(opened),
        Sha256::new(),
        0_u64,
        progress.clone(),
    );
    let messages = stream::unfold(state, move |(next, mut hash, mut size, progress)| {
        let metadata = metadata.clone();
        async move {
            match next {
                Next::Metadata(file) => {
                    let part = Part::Metadata(metadata);
                    Some((part, (Next::Chunks(file), hash, size, progress)))
                }
                Next::Chunks(mut file) => {
                    let mut chunk = vec![0; CHUNK_BYTES];
                    let read = match file.read(&mut chunk).await {
                        Ok(read) => read,
                        Err(error) => {
                            // Ending without a commit stores nothing; the gateway then
                            // reports the incomplete upload.
                            progress.abandon_with_message(format!("read failed: {error}"));
                            return None;
                        }
                    };
                    if read == 0 {
                        let commit = Part::Commit(UploadCommit {
                            size_bytes: size,
                            sha256: hex::encode(hash.finalize_reset()),
                        });
                        return Some((commit, (Next::Done, hash, size, progress)));
                    }
                    chunk.truncate(read);
                    hash.update(&chunk);
                    size += read as u64;
                    progress.inc(read as u64);
                    let part = Part::AudioChunk(chunk.into());
                    Some((part, (Next::Chunks(file), hash, size, progress)))
                }
                Next::Done => None,
            }
        }
    })
    .map(|part| UploadTrackRequest { part: Some(part) });
    let track = CreatorGatewayClient::new(channel)
        .upload_track(signed(messages, token)?)
        .await
        .map_err(|status| anyhow::anyhow!("{}: {}", status.code().description(), status.message()))?
        .into_inner();
    progress.finish_and_clear();
    to_json(protos::descriptors::CREATOR, "creator.v1.Track", &track)
}

/// Writes the audio of `track_id` to `output` and returns the number of bytes written.
pub(crate) async fn download(
    channel: Channel,
    token: &str,
    track_id: &str,
    secret_token: Option<String>,
    output: &Path,
) -> anyhow::Result<u64> {
    let request = DownloadTrackRequest {
        track_id: track_id.to_owned(),
        secret_token,
    };
    let status = |status: tonic::Status| {
        anyhow::anyhow!("{}: {}", status.code().description(), status.message())
    };
    let mut chunks = ConsumerGatewayClient::new(channel)
        .download_track(signed(request, token)?)
        .await
        .map_err(status)?
        .into_inner();
    let mut file = tokio::fs::File::create(output)
        .await
        .with_context(|| format!("cannot create {}", output.display()))?;
    let progress = bar(None);
    let mut written = 0_u64;
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(status)?.chunk;
        file.write_all(&chunk).await?;
        written += chunk.len() as u64;
        progress.inc(chunk.len() as u64);
    }
    file.flush().await?;
    progress.finish_and_clear();
    if written == 0 {
        bail!("the gateway sent no audio for {track_id}");
    }
    Ok(written)
}

/// A generated message as pretty canonical protobuf JSON.
fn to_json(descriptors: &[u8], name: &str, message: &impl Message) -> anyhow::Result<String> {
    let pool = DescriptorPool::decode(descriptors)?;
    let descriptor = pool
        .get_message_by_name(name)
        .with_context(|| format!("no message {name}"))?;
    let dynamic = DynamicMessage::decode(descriptor, message.encode_to_vec().as_slice())?;
    let mut serializer = serde_json::Serializer::pretty(Vec::new());
    dynamic.serialize_with_options(&mut serializer, &SerializeOptions::new())?;
    Ok(String::from_utf8(serializer.into_inner())?)
}
