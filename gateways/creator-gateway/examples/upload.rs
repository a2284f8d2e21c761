//! Uploads generated audio through a running creator gateway, streaming it chunk by chunk:
//! `cargo run -p creator-gateway --example upload -- [URL] [MIB] [CHUNK_KIB]`
//! (defaults `http://127.0.0.1:50052`, 20 MiB, 64 KiB chunks). It signs in as `usr_0001` with a
//! development token, so the gateway must run with the development auth settings.

use authorization::token::mint_development_token;
use futures::stream;
use protos::creator::v1::{
    Track, UploadTrackRequest, creator_gateway_client::CreatorGatewayClient, track::Visibility,
    upload_track_request::Part,
};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:50052".into());
    let mib: usize = args.next().map_or(Ok(20), |arg| arg.parse())?;
    let chunk_kib: usize = args.next().map_or(Ok(64), |arg| arg.parse())?;
    let (total, chunk) = (mib * 1024 * 1024, chunk_kib * 1024);

    let metadata = UploadTrackRequest {
        part: Some(Part::Metadata(Track {
            title: format!("{mib} MiB upload"),
            visibility: Visibility::Public as i32,
            ..Track::default()
        })),
    };
    // The chunks are made as the client sends them, so the client holds one at a time too.
    let chunks = stream::iter((0..total.div_ceil(chunk)).map(move |n| {
        let len = chunk.min(total - n * chunk);
        UploadTrackRequest {
            part: Some(Part::AudioChunk(vec![(n % 251) as u8; len].into())),
        }
    }));
    // The commit ends the upload; without it nothing is stored.
    let commit = UploadTrackRequest {
        part: Some(Part::Commit(protos::creator::v1::UploadCommit {
            size_bytes: total as u64,
            sha256: String::new(),
        })),
    };
    let mut request = tonic::Request::new(stream::StreamExt::chain(
        stream::StreamExt::chain(stream::iter([metadata]), chunks),
        stream::iter([commit]),
    ));
    let token = mint_development_token(Some("usr_0001"), "US", 600);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse()?);

    let mut client = CreatorGatewayClient::connect(url).await?;
    let started = std::time::Instant::now();
    let track = client.upload_track(request).await?.into_inner();
    let audio = track.audio.unwrap_or_default();
    println!(
        "uploaded {} ({} bytes, sha256 {}) in {:.2?}",
        track.id,
        audio.size_bytes,
        audio.sha256,
        started.elapsed()
    );
    Ok(())
}
