//! Compiles `proto/` with protox (pure Rust, no system `protoc`) and generates prost and tonic
//! code from the resulting descriptors. Besides the code it writes, into `OUT_DIR`, one encoded
//! `FileDescriptorSet` for all APIs and one per API, so that each binary can serve reflection for
//! its own services only.

use std::{env, fs, path::PathBuf};

use prost::Message;

/// Each API: its short name and its file under `proto/`.
const APIS: &[(&str, &str)] = &[
    ("tracks", "foundation/tracks/v1/tracks.proto"),
    ("likes", "foundation/likes/v1/likes.proto"),
    ("follows", "foundation/follows/v1/follows.proto"),
    ("counts", "foundation/counts/v1/counts.proto"),
    ("consumer", "gateways/consumer/v1/consumer.proto"),
    ("creator", "gateways/creator/v1/creator.proto"),
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let out = PathBuf::from(env::var("OUT_DIR")?);
    println!("cargo:rerun-if-changed={}", root.display());

    for (name, file) in APIS {
        let set = protox::compile([file], [&root])?;
        fs::write(
            out.join(format!("{name}_descriptor.bin")),
            set.encode_to_vec(),
        )?;
    }

    let all = protox::compile(APIS.iter().map(|(_, file)| file), [&root])?;

    // Every client and server uses the crate's codec: prost's, with smaller buffers.
    tonic_prost_build::configure()
        .codec_path("crate::codec::CompactCodec")
        .bytes(".foundation.tracks.v1")
        .bytes(".consumer.v1.DownloadTrackResponse")
        .bytes(".creator.v1.UploadTrackRequest")
        .compile_fds(all)?;
    Ok(())
}
