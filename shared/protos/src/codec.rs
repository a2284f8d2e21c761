//! The protobuf codec of every generated client and server: prost's, with smaller buffers.
//!
//! tonic allocates an encode and a decode buffer for every call, up front, at 8 KiB each. A
//! gateway holds one inbound call and up to five upstream calls for each request in flight, and
//! its messages are a few hundred bytes: at a thousand GetTrack calls in flight, 1 KiB buffers
//! took about 10 MiB off the gateway's peak RSS. Starting at 1 KiB costs a few more
//! reallocations for the rare large message (a page of a hundred tracks) and nothing else.

use std::marker::PhantomData;

use tonic::codec::{BufferSettings, Codec};
use tonic_prost::ProstCodec;

/// The initial (and growth step of the) encode and decode buffer of each call.
pub const BUFFER_SIZE: usize = 1024;

/// How much a streaming response batches before it yields: tonic's default.
const YIELD_THRESHOLD: usize = 32 * 1024;

/// [`ProstCodec`] with [`BUFFER_SIZE`] buffers.
#[derive(Debug, Clone, Copy)]
pub struct CompactCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for CompactCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

fn settings() -> BufferSettings {
    BufferSettings::new(BUFFER_SIZE, YIELD_THRESHOLD)
}

impl<T, U> Codec for CompactCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = <ProstCodec<T, U> as Codec>::Encoder;
    type Decoder = <ProstCodec<T, U> as Codec>::Decoder;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(settings())
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstCodec::<T, U>::raw_decoder(settings())
    }
}
