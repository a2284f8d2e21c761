//! Generated code for every API in `proto/`, with modules that mirror the protobuf packages,
//! and the encoded descriptor sets for server reflection and descriptor-driven field masks.
//! This crate holds code generation and nothing else.

#![allow(unreachable_pub, clippy::all)] // generated code

pub mod codec;

/// Foundation APIs: the services that own the data.
pub mod foundation {
    pub mod tracks {
        pub mod v1 {
            tonic::include_proto!("foundation.tracks.v1");
        }
    }
    pub mod likes {
        pub mod v1 {
            tonic::include_proto!("foundation.likes.v1");
        }
    }
    pub mod follows {
        pub mod v1 {
            tonic::include_proto!("foundation.follows.v1");
        }
    }
    pub mod counts {
        pub mod v1 {
            tonic::include_proto!("foundation.counts.v1");
        }
    }
}

/// The consumer domain gateway's API.
pub mod consumer {
    pub mod v1 {
        tonic::include_proto!("consumer.v1");
    }
}

/// The creator domain gateway's API.
pub mod creator {
    pub mod v1 {
        tonic::include_proto!("creator.v1");
    }
}

/// Encoded `FileDescriptorSet`s, one per API: for reflection, so that a binary lists only the
/// services it serves, and for each gateway's view schema.
pub mod descriptors {
    pub const TRACKS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/tracks_descriptor.bin"));
    pub const LIKES: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/likes_descriptor.bin"));
    pub const FOLLOWS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/follows_descriptor.bin"));
    pub const COUNTS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/counts_descriptor.bin"));
    pub const CONSUMER: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/consumer_descriptor.bin"));
    pub const CREATOR: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/creator_descriptor.bin"));
}
