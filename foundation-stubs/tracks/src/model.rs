//! The domain model of a track, the rules of creating and updating one, and the checks on what
//! callers may write.

use foundation_kit::{FoundationError, ids, time};
use service_runtime::territories as iso3166;

pub(crate) const MAX_TITLE: usize = 200;
pub(crate) const MAX_DESCRIPTION: usize = 5000;
pub(crate) const MAX_GENRE: usize = 50;
pub(crate) const MAX_URL: usize = 2048;
pub(crate) const MAX_DURATION_MS: i64 = 24 * 3600 * 1000;
pub(crate) const MAX_TERRITORIES: usize = 249;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Visibility {
    Public,
    Private,
}

impl Visibility {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Public => "public",
            Self::Private => "private",
        }
    }

    pub(crate) fn parse(text: &str) -> Result<Self, FoundationError> {
        match text {
            "public" => Ok(Self::Public),
            "private" => Ok(Self::Private),
            other => Err(FoundationError::Corrupt(format!("visibility {other:?}"))),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GeoMode {
    None,
    AllowList,
    BlockList,
}

impl GeoMode {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::AllowList => "allow_list",
            Self::BlockList => "block_list",
        }
    }

    pub(crate) fn parse(text: &str) -> Result<Self, FoundationError> {
        match text {
            "none" => Ok(Self::None),
            "allow_list" => Ok(Self::AllowList),
            "block_list" => Ok(Self::BlockList),
            other => Err(FoundationError::Corrupt(format!(
                "geoblocking mode {other:?}"
            ))),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Geoblocking {
    pub mode: GeoMode,
    /// Sorted, without duplicates.
    pub territories: Vec<String>,
}

/// What a caller writes: the metadata of a track.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metadata {
    pub title: String,
    pub description: String,
    pub genre: String,
    pub duration_ms: i64,
    pub artwork_url: String,
    pub visibility: Visibility,
    pub geoblocking: Geoblocking,
    pub downloadable: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Audio {
    pub id: String,
    pub size: i64,
    pub sha256: String,
}

/// A stored track.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Track {
    pub id: String,
    pub owner_id: String,
    pub metadata: Metadata,
    /// Empty unless the track is private.
    pub secret_token: String,
    pub create_time_us: i64,
    pub update_time_us: i64,
    pub audio: Audio,
}

impl Track {
    /// A new track, created now, with a secret token if it is private.
    pub(crate) fn new(owner_id: String, metadata: Metadata, audio: Audio) -> Self {
        let now = time::now_us();
        let mut track = Self {
            id: ids::new_track_id(),
            owner_id,
            metadata,
            secret_token: String::new(),
            create_time_us: now,
            update_time_us: now,
            audio,
        };
        track.align_secret_token();
        track
    }

    /// Applies the changes of an update in mask order (AIP-134), then checks the result.
    pub(crate) fn apply_update(&mut self, changes: Vec<Change>) -> Result<(), FoundationError> {
        let m = &mut self.metadata;
        for change in changes {
            match change {
                Change::Title(title) => m.title = title,
                Change::Description(description) => m.description = description,
                Change::Genre(genre) => m.genre = genre,
                Change::Duration(duration_ms) => m.duration_ms = duration_ms,
                Change::ArtworkUrl(url) => m.artwork_url = url,
                Change::Visibility(visibility) => m.visibility = visibility,
                Change::Geoblocking(geoblocking) => m.geoblocking = geoblocking,
                Change::GeoMode(mode) => m.geoblocking.mode = mode,
                Change::Territories(territories) => m.geoblocking.territories = territories,
                Change::Downloadable(downloadable) => m.downloadable = downloadable,
            }
        }
        check_metadata(&self.metadata)?;
        self.align_secret_token();
        Ok(())
    }

    /// Keeps the secret token in step with the visibility. A private track always has a secret
    /// token, and keeps the one it has; making a track public drops it, so that links shared
    /// while it was private stop working if it is made private later.
    fn align_secret_token(&mut self) {
        match (self.metadata.visibility, self.secret_token.is_empty()) {
            (Visibility::Private, true) => self.secret_token = new_secret_token(),
            (Visibility::Public, false) => self.secret_token.clear(),
            _ => {}
        }
    }
}

/// A private link's secret: 128 bits from the operating system's CSPRNG, independent of any id
/// (a UUIDv7 made beside the track id would share its timestamp bits) and of the seed (seeded
/// private tracks get theirs here too, when the database is seeded), compared in constant
/// time by `authorization::policy::secrets_match`.
pub(crate) fn new_secret_token() -> String {
    let mut bits = [0u8; 16];
    // Without the OS generator there is no safe secret: the service cannot go on.
    getrandom::fill(&mut bits).expect("the operating system's random generator is available");
    format!("sec_{}", hex::encode(bits))
}

fn check_len(field: &'static str, value: &str, max: usize) -> Result<(), FoundationError> {
    if value.chars().count() > max {
        return Err(FoundationError::invalid(
            field,
            format!("must be at most {max} characters"),
        ));
    }
    Ok(())
}

pub(crate) fn check_title(title: &str) -> Result<(), FoundationError> {
    if title.trim().is_empty() {
        return Err(FoundationError::invalid("title", "is required"));
    }
    check_len("title", title, MAX_TITLE)
}

pub(crate) fn check_description(description: &str) -> Result<(), FoundationError> {
    check_len("description", description, MAX_DESCRIPTION)
}

pub(crate) fn check_genre(genre: &str) -> Result<(), FoundationError> {
    check_len("genre", genre, MAX_GENRE)
}

pub(crate) fn check_duration(duration_ms: i64) -> Result<(), FoundationError> {
    if !(0..=MAX_DURATION_MS).contains(&duration_ms) {
        return Err(FoundationError::invalid(
            "duration",
            "must be between 0 and 24 hours",
        ));
    }
    Ok(())
}

pub(crate) fn check_artwork_url(url: &str) -> Result<(), FoundationError> {
    check_len("artwork_url", url, MAX_URL)?;
    if !(url.is_empty() || url.starts_with("https://") || url.starts_with("http://")) {
        return Err(FoundationError::invalid(
            "artwork_url",
            "must be an http or https URL",
        ));
    }
    Ok(())
}

/// Checks and normalizes territories (sorted, without duplicates).
pub(crate) fn territories(codes: &[String]) -> Result<Vec<String>, FoundationError> {
    if codes.len() > MAX_TERRITORIES {
        return Err(FoundationError::invalid(
            "geoblocking.territories",
            format!("holds more than {MAX_TERRITORIES} codes"),
        ));
    }
    let mut out = Vec::with_capacity(codes.len());
    for code in codes {
        if !iso3166::is_assigned(code) {
            return Err(FoundationError::invalid(
                "geoblocking.territories",
                format!("{code:?} is not an ISO 3166-1 alpha-2 code"),
            ));
        }
        out.push(code.clone());
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// A policy is consistent: no territories without a list mode, and a list mode needs at least
/// one territory.
pub(crate) fn check_geoblocking(geo: &Geoblocking) -> Result<(), FoundationError> {
    match (geo.mode, geo.territories.is_empty()) {
        (GeoMode::None, false) => Err(FoundationError::invalid(
            "geoblocking.territories",
            "must be empty when the mode is NONE",
        )),
        (GeoMode::AllowList | GeoMode::BlockList, true) => Err(FoundationError::invalid(
            "geoblocking.territories",
            "must name at least one territory for ALLOW_LIST and BLOCK_LIST",
        )),
        _ => Ok(()),
    }
}

pub(crate) fn check_metadata(metadata: &Metadata) -> Result<(), FoundationError> {
    check_title(&metadata.title)?;
    check_description(&metadata.description)?;
    check_genre(&metadata.genre)?;
    check_duration(metadata.duration_ms)?;
    check_artwork_url(&metadata.artwork_url)?;
    check_geoblocking(&metadata.geoblocking)
}

pub(crate) fn check_owner(owner_id: &str) -> Result<(), FoundationError> {
    ids::check("owner_id", owner_id)
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

/// The new value of the field that one path of an update mask names, converted from the wire.
#[derive(Debug)]
pub(crate) enum Change {
    Title(String),
    Description(String),
    Genre(String),
    Duration(i64),
    ArtworkUrl(String),
    Visibility(Visibility),
    Geoblocking(Geoblocking),
    GeoMode(GeoMode),
    Territories(Vec<String>),
    Downloadable(bool),
}

/// Checks the paths of an update mask: they are required, `*` means every updatable path, and
/// every other path must be updatable. Returns the paths the update applies.
pub(crate) fn check_update_mask(paths: Vec<String>) -> Result<Vec<String>, FoundationError> {
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
            return Err(not_updatable(path));
        }
    }
    Ok(paths)
}

/// The error for a mask path that names no updatable field.
pub(crate) fn not_updatable(path: &str) -> FoundationError {
    FoundationError::invalid("update_mask", format!("{path:?} is not an updatable path"))
}
