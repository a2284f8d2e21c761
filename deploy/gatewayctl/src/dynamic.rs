//! Unary gRPC calls with messages described at run time: a tonic codec for
//! `prost_reflect::DynamicMessage`, so that `call` reaches any method of the descriptor sets.

use anyhow::Context;
use prost::Message;
use prost_reflect::{DeserializeOptions, DynamicMessage, MessageDescriptor, MethodDescriptor};
use serde_json::Value;
use tonic::{
    Status,
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    codegen::http::uri::PathAndQuery,
    metadata::MetadataValue,
    transport::Channel,
};

/// The response header that names the mask paths a gateway had to leave out.
const DEGRADED_FIELDS: &str = "x-degraded-fields";

/// Calls `method` with the JSON `request` (canonical protobuf JSON, unknown fields refused) and
/// `authorization: Bearer {token}`; returns the response and the degraded paths.
pub async fn call_dynamic(
    channel: Channel,
    method: &MethodDescriptor,
    request: &Value,
    token: &str,
) -> anyhow::Result<(DynamicMessage, Vec<String>)> {
    let message = DynamicMessage::deserialize_with_options(
        method.input(),
        request,
        &DeserializeOptions::new(),
    )
    .with_context(|| format!("the request is not a valid {}", method.input().full_name()))?;
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        MetadataValue::try_from(format!("Bearer {token}")).context("the token is not ASCII")?,
    );
    let path = PathAndQuery::try_from(format!(
        "/{}/{}",
        method.parent_service().full_name(),
        method.name()
    ))
    .context("bad method path")?;
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.context("the gateway is not ready")?;
    let response = grpc
        .unary(request, path, DynamicCodec(method.output()))
        .await
        .map_err(|status| {
            anyhow::anyhow!("{}: {}", status.code().description(), status.message())
        })?;
    let degraded = response
        .metadata()
        .get(DEGRADED_FIELDS)
        .and_then(|value| value.to_str().ok())
        .map(|value| {
            value
                .split(',')
                .filter(|path| !path.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    Ok((response.into_inner(), degraded))
}

/// Encodes any dynamic message; decodes the response as the method's output type.
#[derive(Debug, Clone)]
struct DynamicCodec(MessageDescriptor);

impl Codec for DynamicCodec {
    type Encode = DynamicMessage;
    type Decode = DynamicMessage;
    type Encoder = DynamicEncoder;
    type Decoder = DynamicDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        DynamicEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        DynamicDecoder(self.0.clone())
    }
}

#[derive(Debug)]
struct DynamicEncoder;

impl Encoder for DynamicEncoder {
    type Item = DynamicMessage;
    type Error = Status;

    fn encode(&mut self, item: Self::Item, dst: &mut EncodeBuf<'_>) -> Result<(), Self::Error> {
        item.encode(dst)
            .map_err(|error| Status::internal(format!("cannot encode the request: {error}")))
    }
}

#[derive(Debug)]
struct DynamicDecoder(MessageDescriptor);

impl Decoder for DynamicDecoder {
    type Item = DynamicMessage;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Self::Error> {
        DynamicMessage::decode(self.0.clone(), src)
            .map(Some)
            .map_err(|error| Status::internal(format!("cannot decode the response: {error}")))
    }
}
