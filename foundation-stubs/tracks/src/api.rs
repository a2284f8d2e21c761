//! The gRPC edge: converts between the wire and the domain model, checks input, calls the
//! store, and maps errors in one place ([`FoundationError`] into `Status`).

use std::pin::Pin;

use bytes::Bytes;
use foundation_kit::{FoundationError, ids, page, time};
use futures::{Stream, StreamExt, TryStreamExt, stream};
use protos::foundation::tracks::v1::{
    self as pb, AudioChunk, BatchGetTracksRequest, BatchGetTracksResponse, CreateTrackRequest,
    DeleteTrackRequest, DeleteTrackResponse, ListTracksByOwnerRequest, ListTracksByOwnerResponse,
    ReadAudioRequest, RecordDownloadRequest, RecordDownloadResponse, UpdateTrackRequest,
    UploadCommit, create_track_request::Part, tracks_service_server::TracksService,
};
use sha2::{Digest, Sha256};
use tonic::{Request, Response, Status, Streaming};

use crate::{
    AudioSettings, Limits,
    model::{
        self, Audio, GeoMode, Geoblocking, Metadata, Track, Visibility, check_metadata,
        new_secret_token,
    },
    store::{TracksStore, not_found},
};

#[derive(Debug)]
pub(crate) struct TracksApi {
    store: TracksStore,
    limits: Limits,
    audio: AudioSettings,
}

impl TracksApi {
    pub(crate) fn new(store: TracksStore, limits: Limits, audio: AudioSettings) -> Self {
        Self {
            store,
            limits,
            audio,
        }
    }
}

pub(crate) fn to_pb(track: Track) -> pb::Track {
    let m = track.metadata;
    pb::Track {
        id: track.id,
        owner_id: track.owner_id,
        title: m.title,
        description: m.description,
        genre: m.genre,
        duration: Some(prost_types::Duration {
            seconds: m.duration_ms / 1000,
            nanos: i32::try_from((m.duration_ms % 1000) * 1_000_000).unwrap_or(0),
        }),
        artwork_url: m.artwork_url,
        create_time: Some(time::timestamp(track.create_time_us)),
        update_time: Some(time::timestamp(track.update_time_us)),
        visibility: match m.visibility {
            Visibility::Public => pb::Visibility::Public,
            Visibility::Private => pb::Visibility::Private,
        } as i32,
        secret_token: track.secret_token,
        geoblocking: Some(pb::Geoblocking {
            mode: match m.geoblocking.mode {
                GeoMode::None => pb::GeoblockingMode::None,
                GeoMode::AllowList => pb::GeoblockingMode::AllowList,
                GeoMode::BlockList => pb::GeoblockingMode::BlockList,
            } as i32,
            territories: m.geoblocking.territories,
        }),
        downloadable: m.downloadable,
        audio: Some(pb::AudioSummary {
            size_bytes: u64::try_from(track.audio.size).unwrap_or(0),
            sha256: track.audio.sha256,
        }),
    }
}

fn duration_ms(duration: Option<&prost_types::Duration>) -> Result<i64, FoundationError> {
    let Some(d) = duration else { return Ok(0) };
    if d.seconds < 0 || d.nanos < 0 || d.nanos >= 1_000_000_000 {
        return Err(FoundationError::invalid(
            "duration",
            "must be a non-negative duration",
        ));
    }
    d.seconds
        .checked_mul(1000)
        .and_then(|ms| ms.checked_add(i64::from(d.nanos / 1_000_000)))
        .ok_or_else(|| FoundationError::invalid("duration", "is too long"))
}

fn visibility(value: i32, unspecified: Option<Visibility>) -> Result<Visibility, FoundationError> {
    match pb::Visibility::try_from(value) {
        Ok(pb::Visibility::Public) => Ok(Visibility::Public),
        Ok(pb::Visibility::Private) => Ok(Visibility::Private),
        Ok(pb::Visibility::Unspecified) => unspecified
            .ok_or_else(|| FoundationError::invalid("visibility", "must be PUBLIC or PRIVATE")),
        Err(_) => Err(FoundationError::invalid(
            "visibility",
            format!("unknown value {value}"),
        )),
    }
}

fn geo_mode(value: i32) -> Result<GeoMode, FoundationError> {
    match pb::GeoblockingMode::try_from(value) {
        Ok(pb::GeoblockingMode::None | pb::GeoblockingMode::Unspecified) => Ok(GeoMode::None),
        Ok(pb::GeoblockingMode::AllowList) => Ok(GeoMode::AllowList),
        Ok(pb::GeoblockingMode::BlockList) => Ok(GeoMode::BlockList),
        Err(_) => Err(FoundationError::invalid(
            "geoblocking.mode",
            format!("unknown value {value}"),
        )),
    }
}

/// The metadata of a new track; an unspecified visibility means public, an unset policy means
/// playable everywhere.
fn new_metadata(given: &pb::TrackMetadata) -> Result<Metadata, FoundationError> {
    let geo = given.geoblocking.clone().unwrap_or_default();
    let metadata = Metadata {
        title: given.title.clone(),
        description: given.description.clone(),
        genre: given.genre.clone(),
        duration_ms: duration_ms(given.duration.as_ref())?,
        artwork_url: given.artwork_url.clone(),
        visibility: visibility(given.visibility, Some(Visibility::Public))?,
        geoblocking: Geoblocking {
            mode: geo_mode(geo.mode)?,
            territories: model::territories(&geo.territories)?,
        },
        downloadable: given.downloadable,
    };
    check_metadata(&metadata)?;
    Ok(metadata)
}

/// The paths of `TrackMetadata` that `UpdateTrack` accepts.
const UPDATABLE: &[&str] = &[
    "title",
    "description",
    "genre",
    "duration",
    "artwork_url",
    "visibility",
    "geoblocking",
    "geoblocking.mode",
    "geoblocking.territories",
    "downloadable",
];

/// Applies the masked fields of `given` to `track` (AIP-134), then checks the result.
fn apply_update(
    track: &mut Track,
    given: &pb::TrackMetadata,
    paths: &[String],
) -> Result<(), FoundationError> {
    let geo = given.geoblocking.clone().unwrap_or_default();
    let m = &mut track.metadata;
    for path in paths {
        match path.as_str() {
            "title" => m.title.clone_from(&given.title),
            "description" => m.description.clone_from(&given.description),
            "genre" => m.genre.clone_from(&given.genre),
            "duration" => m.duration_ms = duration_ms(given.duration.as_ref())?,
            "artwork_url" => m.artwork_url.clone_from(&given.artwork_url),
            "visibility" => m.visibility = visibility(given.visibility, None)?,
            "geoblocking" => {
                m.geoblocking = Geoblocking {
                    mode: geo_mode(geo.mode)?,
                    territories: model::territories(&geo.territories)?,
                };
            }
            "geoblocking.mode" => m.geoblocking.mode = geo_mode(geo.mode)?,
            "geoblocking.territories" => {
                m.geoblocking.territories = model::territories(&geo.territories)?;
            }
            "downloadable" => m.downloadable = given.downloadable,
            _ => unreachable_path(path)?,
        }
    }
    check_metadata(m)?;
    // A private track always has a secret token; making a track public again drops it, so
    // that links shared while it was private stop working if it is made private later.
    match (m.visibility, track.secret_token.is_empty()) {
        (Visibility::Private, true) => track.secret_token = new_secret_token(),
        (Visibility::Public, false) => track.secret_token.clear(),
        _ => {}
    }
    Ok(())
}

fn unreachable_path(path: &str) -> Result<(), FoundationError> {
    Err(FoundationError::invalid(
        "update_mask",
        format!("{path:?} is not an updatable path"),
    ))
}

fn check_update_mask(
    mask: Option<&prost_types::FieldMask>,
) -> Result<Vec<String>, FoundationError> {
    let paths = mask.map(|mask| mask.paths.clone()).unwrap_or_default();
    if paths.is_empty() {
        return Err(FoundationError::invalid(
            "update_mask",
            "is required: name the fields to change",
        ));
    }
    if paths.iter().any(|path| path == "*") {
        return Ok(UPDATABLE.iter().map(|&p| p.to_owned()).collect());
    }
    for path in &paths {
        if path == "owner_id" {
            return Err(FoundationError::invalid(
                "update_mask",
                "owner_id cannot be changed",
            ));
        }
        if !UPDATABLE.contains(&path.as_str()) {
            unreachable_path(path)?;
        }
    }
    Ok(paths)
}

/// Receives the audio of an upload, staging its chunks, then commits the track. It runs as a
/// task of its own, so that a caller going away cannot cut it off between two statements: on
/// any error it removes what it staged, after its last write has finished.
async fn receive_and_commit(
    store: TracksStore,
    mut parts: Streaming<CreateTrackRequest>,
    owner_id: String,
    metadata: Metadata,
    max_bytes: u64,
) -> Result<Track, Status> {
    let audio_id = format!("aud_{}", uuid::Uuid::now_v7().simple());
    let received = receive(&store, &mut parts, &audio_id, max_bytes).await;
    let outcome = match received {
        Ok((size, sha256)) => {
            let now = time::now_us();
            let secret_token = match metadata.visibility {
                Visibility::Private => new_secret_token(),
                Visibility::Public => String::new(),
            };
            let track = Track {
                id: ids::new_track_id(),
                owner_id,
                metadata,
                secret_token,
                create_time_us: now,
                update_time_us: now,
                audio: Audio {
                    id: audio_id.clone(),
                    size: size as i64,
                    sha256,
                },
            };
            match store.create(&track).await {
                Ok(()) => return Ok(track),
                Err(error) => Err(Status::from(FoundationError::from(error))),
            }
        }
        Err(status) => Err(status),
    };
    if let Err(error) = store.discard_chunks(&audio_id).await {
        tracing::warn!(%error, %audio_id, "cannot discard the chunks of a failed upload");
    }
    outcome
}

/// Stages every audio chunk of the stream until the commit; returns the size and the SHA-256.
async fn receive(
    store: &TracksStore,
    parts: &mut Streaming<CreateTrackRequest>,
    audio_id: &str,
    max_bytes: u64,
) -> Result<(u64, String), Status> {
    let mut hasher = Sha256::new();
    let mut size: u64 = 0;
    let mut seq = 0;
    loop {
        // tonic reports a cancelled call as a clean end of the stream, so only the commit
        // tells a finished upload from an abandoned one.
        let Some(message) = parts.message().await? else {
            return Err(FoundationError::invalid(
                "commit",
                "the upload ended without its commit message; nothing was stored",
            )
            .into());
        };
        let chunk = match message.part {
            Some(Part::AudioChunk(chunk)) => chunk,
            Some(Part::Commit(commit)) => {
                let sha256 = hex::encode(hasher.finalize());
                check_commit(&commit, size, &sha256)?;
                return Ok((size, sha256));
            }
            Some(Part::Metadata(_)) => {
                return Err(FoundationError::invalid(
                    "metadata",
                    "only the first message may carry metadata",
                )
                .into());
            }
            None => return Err(FoundationError::invalid("part", "is required").into()),
        };
        if chunk.is_empty() {
            continue;
        }
        size += chunk.len() as u64;
        if size > max_bytes {
            return Err(FoundationError::AudioTooLarge { limit: max_bytes }.into());
        }
        hasher.update(&chunk);
        store
            .stage_chunk(audio_id, seq, &chunk)
            .await
            .map_err(FoundationError::from)?;
        seq += 1;
    }
}

/// The commit must describe what arrived: some audio, of the declared size and, when declared,
/// of the declared SHA-256.
fn check_commit(commit: &UploadCommit, size: u64, sha256: &str) -> Result<(), FoundationError> {
    if size == 0 {
        return Err(FoundationError::invalid(
            "audio_chunk",
            "the upload carries no audio",
        ));
    }
    if commit.size_bytes != size {
        return Err(FoundationError::invalid(
            "commit.size_bytes",
            format!("is {} but {size} bytes arrived", commit.size_bytes),
        ));
    }
    if !commit.sha256.is_empty() && !commit.sha256.eq_ignore_ascii_case(sha256) {
        return Err(FoundationError::invalid(
            "commit.sha256",
            "does not match the audio that arrived",
        ));
    }
    Ok(())
}

type AudioStream = Pin<Box<dyn Stream<Item = Result<AudioChunk, Status>> + Send>>;

#[tonic::async_trait]
impl TracksService for TracksApi {
    async fn create_track(
        &self,
        request: Request<Streaming<CreateTrackRequest>>,
    ) -> Result<Response<pb::Track>, Status> {
        let mut parts = request.into_inner();
        let first = parts.message().await?.and_then(|message| message.part);
        let Some(Part::Metadata(given)) = first else {
            return Err(FoundationError::invalid(
                "metadata",
                "the first message must carry the metadata",
            )
            .into());
        };
        model::check_owner(&given.owner_id)?;
        let metadata = new_metadata(&given)?;

        let upload = tokio::spawn(receive_and_commit(
            self.store.clone(),
            parts,
            given.owner_id,
            metadata,
            self.audio.max_bytes,
        ));
        let track = upload.await.map_err(|error| {
            tracing::error!(%error, "upload task failed");
            Status::internal("internal error")
        })??;
        tracing::info!(track_id = %track.id, size = track.audio.size, "track created");
        Ok(Response::new(to_pb(track)))
    }

    async fn update_track(
        &self,
        request: Request<UpdateTrackRequest>,
    ) -> Result<Response<pb::Track>, Status> {
        let request = request.into_inner();
        ids::check("track_id", &request.track_id)?;
        let paths = check_update_mask(request.update_mask.as_ref())?;
        let given = request.metadata.unwrap_or_default();
        let track = self
            .store
            .update(&request.track_id, |track| {
                apply_update(track, &given, &paths)
            })
            .await?;
        Ok(Response::new(to_pb(track)))
    }

    async fn delete_track(
        &self,
        request: Request<DeleteTrackRequest>,
    ) -> Result<Response<DeleteTrackResponse>, Status> {
        let request = request.into_inner();
        ids::check("track_id", &request.track_id)?;
        self.store.delete(&request.track_id).await?;
        Ok(Response::new(DeleteTrackResponse {}))
    }

    async fn batch_get_tracks(
        &self,
        request: Request<BatchGetTracksRequest>,
    ) -> Result<Response<BatchGetTracksResponse>, Status> {
        let request = request.into_inner();
        ids::check_batch("ids", &request.ids, self.limits.max_batch)?;
        let found = self.store.batch_get(&request.ids).await?;
        let mut response = BatchGetTracksResponse::default();
        for id in request.ids {
            match found.get(&id) {
                Some(track) => response.tracks.push(to_pb(track.clone())),
                None => response.missing_ids.push(id),
            }
        }
        Ok(Response::new(response))
    }

    async fn list_tracks_by_owner(
        &self,
        request: Request<ListTracksByOwnerRequest>,
    ) -> Result<Response<ListTracksByOwnerResponse>, Status> {
        let request = request.into_inner();
        ids::check("owner_id", &request.owner_id)?;
        let size = page::page_size(request.page_size)?;
        let cursor = page::Cursor::decode(&request.page_token)?;
        let (tracks, next) = self
            .store
            .by_owner(&request.owner_id, &cursor, size)
            .await?;
        Ok(Response::new(ListTracksByOwnerResponse {
            tracks: tracks.into_iter().map(to_pb).collect(),
            next_page_token: next.map(|cursor| cursor.encode()).unwrap_or_default(),
        }))
    }

    type ReadAudioStream = AudioStream;

    async fn read_audio(
        &self,
        request: Request<ReadAudioRequest>,
    ) -> Result<Response<Self::ReadAudioStream>, Status> {
        let request = request.into_inner();
        ids::check("track_id", &request.track_id)?;
        let track = self
            .store
            .get(&request.track_id)
            .await?
            .ok_or_else(|| not_found(&request.track_id))?;
        let audio_id = track.audio.id;
        let chunks = self
            .store
            .chunk_count(&audio_id)
            .await
            .map_err(FoundationError::from)?;
        let store = self.store.clone();
        let piece = self.audio.chunk_bytes.max(1);
        let track_id = request.track_id;
        let stream = stream::iter(0..chunks)
            .then(move |seq| {
                let store = store.clone();
                let audio_id = audio_id.clone();
                let track_id = track_id.clone();
                async move {
                    match store.chunk(&audio_id, seq).await {
                        Ok(Some(data)) => Ok(Bytes::from(data)),
                        // The track was deleted while it was being read.
                        Ok(None) => Err(Status::from(not_found(&track_id))),
                        Err(error) => Err(Status::from(FoundationError::from(error))),
                    }
                }
            })
            .map_ok(move |data| {
                let pieces: Vec<Result<AudioChunk, Status>> = (0..data.len())
                    .step_by(piece)
                    .map(|start| {
                        Ok(AudioChunk {
                            data: data.slice(start..(start + piece).min(data.len())),
                        })
                    })
                    .collect();
                stream::iter(pieces)
            })
            .try_flatten();
        Ok(Response::new(Box::pin(stream)))
    }

    async fn record_download(
        &self,
        request: Request<RecordDownloadRequest>,
    ) -> Result<Response<RecordDownloadResponse>, Status> {
        let request = request.into_inner();
        ids::check("track_id", &request.track_id)?;
        ids::check("user_id", &request.user_id)?;
        let event_id = self
            .store
            .record_download(&request.track_id, &request.user_id)
            .await?;
        Ok(Response::new(RecordDownloadResponse { event_id }))
    }
}
