//! The gRPC edge: converts between the wire and the domain model, checks input, calls the
//! store, and maps errors in one place ([`FoundationError`] into `Status`). The rules of a track
//! live in `model.rs` and the upload protocol in `upload.rs`.

use std::{pin::Pin, time::Duration};

use bytes::Bytes;
use foundation_kit::{FoundationError, ids, page, time};
use futures::{Stream, StreamExt, TryStreamExt, future, stream};
use protos::foundation::tracks::v1::{
    self as pb, AudioChunk, BatchGetTracksRequest, BatchGetTracksResponse, CreateTrackRequest,
    DeleteTrackRequest, DeleteTrackResponse, ListTracksByOwnerRequest, ListTracksByOwnerResponse,
    ReadAudioRequest, RecordDownloadRequest, RecordDownloadResponse, UpdateTrackRequest,
    create_track_request::Part, tracks_service_server::TracksService,
};
use service_runtime::streams::StreamLimits;
use tonic::{Request, Response, Status, Streaming};

use crate::{
    AudioSettings, Limits, UploadSettings,
    model::{self, Change, GeoMode, Geoblocking, Metadata, Track, Visibility, check_metadata},
    store::{TracksStore, not_found},
    upload,
};

#[derive(Debug)]
pub(crate) struct TracksApi {
    store: TracksStore,
    limits: Limits,
    audio: AudioSettings,
    uploads: UploadSettings,
    downloads: StreamLimits,
}

impl TracksApi {
    pub(crate) fn new(
        store: TracksStore,
        limits: Limits,
        audio: AudioSettings,
        uploads: UploadSettings,
        downloads: StreamLimits,
    ) -> Self {
        Self {
            store,
            limits,
            audio,
            uploads,
            downloads,
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

/// The changes of an update, one for each path of its checked mask and in mask order. Only the
/// fields the mask names are converted, so that a field it leaves out cannot fail the call.
fn changes(given: &pb::TrackMetadata, paths: &[String]) -> Result<Vec<Change>, FoundationError> {
    let geo = given.geoblocking.clone().unwrap_or_default();
    paths
        .iter()
        .map(|path| {
            Ok(match path.as_str() {
                "title" => Change::Title(given.title.clone()),
                "description" => Change::Description(given.description.clone()),
                "genre" => Change::Genre(given.genre.clone()),
                "duration" => Change::Duration(duration_ms(given.duration.as_ref())?),
                "artwork_url" => Change::ArtworkUrl(given.artwork_url.clone()),
                "visibility" => Change::Visibility(visibility(given.visibility, None)?),
                "geoblocking" => Change::Geoblocking(Geoblocking {
                    mode: geo_mode(geo.mode)?,
                    territories: model::territories(&geo.territories)?,
                }),
                "geoblocking.mode" => Change::GeoMode(geo_mode(geo.mode)?),
                "geoblocking.territories" => {
                    Change::Territories(model::territories(&geo.territories)?)
                }
                "downloadable" => Change::Downloadable(given.downloadable),
                _ => return Err(model::not_updatable(path)),
            })
        })
        .collect()
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

        let task = tokio::spawn(upload::receive_and_commit(
            self.store.clone(),
            parts,
            given.owner_id,
            metadata,
            self.audio.max_bytes,
            Duration::from_millis(self.uploads.idle_timeout_ms),
        ));
        let track = task.await.map_err(|error| {
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
        let paths = model::check_update_mask(
            request
                .update_mask
                .map(|mask| mask.paths)
                .unwrap_or_default(),
        )?;
        let given = request.metadata.unwrap_or_default();
        let track = self
            .store
            .update(&request.track_id, |track| {
                track.apply_update(changes(&given, &paths)?)
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
        // A reader that stops reading, or a read that never ends, is cut off.
        let bounded = self
            .downloads
            .bound("ReadAudio", stream, || future::ready(Ok(())));
        Ok(Response::new(bounded))
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
