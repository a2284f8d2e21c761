//! Twirp v7 beside gRPC: serves every unary RPC of a tonic service as
//! `POST {prefix}/{package}.{Service}/{Method}` with `application/protobuf` or `application/json`
//! bodies, on the same listener as gRPC, through the same service implementation.
//!
//! # Why a small hand-written bridge and not the `twirp` crate
//!
//! The `twirp` crate generates a second service trait, so each gateway would need an adapter to
//! its tonic implementation anyway; its JSON is plain serde over pbjson types, which writes
//! `google.protobuf.FieldMask` as `{"paths": […]}` rather than the canonical `"a,b.cD"` string
//! (fixable only by swapping the type in code generation for both APIs), and twirp-build clashes
//! on two services in one package. This bridge instead:
//!
//! - calls the tonic service trait methods themselves, with a `tonic::Request` built from the
//!   HTTP headers and passed through the same interceptor gRPC uses, so authentication,
//!   authorization, deadlines and behaviour are identical on both protocols by construction;
//! - transcodes JSON with `prost-reflect`'s serde support against the API's descriptor pool
//!   (decoded once at start-up), which implements protobuf's canonical JSON mapping exactly:
//!   lowerCamelCase names, FieldMask as one string, 64-bit integers as strings, enums by name,
//!   well-known types, and unset fields omitted (so fields outside a read mask do not appear);
//! - needs no change to code generation and no serde impls on generated types.
//!
//! The cost is one extra protobuf encode and decode per JSON call (JSON → dynamic message →
//! bytes → generated type), which is small next to the gateway's fanout.
//!
//! # Protocol details
//!
//! - Errors are Twirp error JSON `{"code", "msg", "meta"}` with the HTTP status of the Twirp v7
//!   table ([`TwirpCode::http_status`]); gRPC codes map one to one ([`TwirpCode::from_grpc`]).
//! - Unknown services or methods, streaming RPCs, methods other than POST and content types
//!   other than the two above are `bad_route` (404), with `meta.twirp_invalid_route`.
//! - An undecodable body is `malformed` (400). Unknown JSON fields are ignored, as Twirp servers
//!   do, so that older servers accept newer clients.
//! - Response metadata (such as `x-degraded-fields`) becomes response headers.
//! - Every response also carries `grpc-status` with the outcome's gRPC code, so the server's
//!   RPC metrics layer (which reads that header) counts Twirp calls by their real outcome.
//! - A Twirp call refused before it reaches this router (shed by the concurrency limit, an
//!   injected fault) gets the same Twirp error JSON: [`TwirpErrorLayer`], in the serve loop,
//!   translates the gRPC form those layers answer in.

mod code;
mod layer;

use std::{collections::HashMap, future::Future, pin::Pin, sync::Arc};

use axum::body::Body;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use prost_reflect::{
    DeserializeOptions, DynamicMessage, MessageDescriptor, MethodDescriptor, SerializeOptions,
    ServiceDescriptor,
};
use tonic::{Status, metadata::MetadataMap, service::Interceptor};

pub use code::TwirpCode;
pub use layer::{TwirpErrorLayer, TwirpErrorService, error_response, is_twirp_path};

/// The path prefix Twirp clients use by default.
pub const PREFIX: &str = "/twirp";

/// The largest request body accepted, the same as tonic's default decoding limit.
pub const DEFAULT_BODY_LIMIT: usize = 4 * 1024 * 1024;

const JSON: &str = "application/json";
const PROTOBUF: &str = "application/protobuf";

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// One registered unary method: protobuf bytes in (with the caller's metadata and extensions),
/// protobuf bytes out.
type Handler =
    Arc<dyn Fn(tonic::Request<Bytes>) -> BoxFuture<Result<Reply, Failure>> + Send + Sync>;

/// A successful call: the encoded response and its metadata.
struct Reply {
    metadata: MetadataMap,
    body: Vec<u8>,
}

/// Why a call failed before or inside the service.
enum Failure {
    /// The protobuf body did not decode into the request type.
    Malformed(String),
    Status(Status),
}

/// A Twirp error, rendered as `{"code", "msg", "meta"}`.
#[derive(Debug, Clone)]
pub struct TwirpError {
    pub code: TwirpCode,
    pub msg: String,
    pub meta: Vec<(String, String)>,
    /// Metadata of the failed call (from the gRPC status), sent as response headers.
    headers: Box<HeaderMap>,
}

impl TwirpError {
    pub fn new(code: TwirpCode, msg: impl Into<String>) -> Self {
        Self {
            code,
            msg: msg.into(),
            meta: Vec::new(),
            headers: Box::default(),
        }
    }

    fn bad_route(msg: impl Into<String>, method: &Method, path: &str) -> Self {
        let mut error = Self::new(TwirpCode::BadRoute, msg);
        error
            .meta
            .push(("twirp_invalid_route".into(), format!("{method} {path}")));
        error
    }

    fn malformed(msg: impl Into<String>) -> Self {
        Self::new(TwirpCode::Malformed, msg)
    }

    /// The Twirp form of a gRPC status: same message, the code mapped one to one.
    pub fn from_status(status: &Status) -> Self {
        let mut error = Self::new(TwirpCode::from_grpc(status.code()), status.message());
        error.headers = Box::new(status.metadata().clone().into_headers());
        error
    }

    /// The error JSON, `{"code":…,"msg":…,"meta":{…}}`.
    pub fn to_json(&self) -> String {
        let meta: serde_json::Map<String, serde_json::Value> = self
            .meta
            .iter()
            .map(|(key, value)| (key.clone(), serde_json::Value::String(value.clone())))
            .collect();
        serde_json::json!({ "code": self.code.as_str(), "msg": self.msg, "meta": meta }).to_string()
    }

    fn into_response(self) -> http::Response<Body> {
        let mut response = http::Response::new(Body::from(self.to_json()));
        *response.status_mut() = self.code.http_status();
        let headers = response.headers_mut();
        for (name, value) in self.headers.iter() {
            if !is_transport_header(name) {
                headers.append(name, value.clone());
            }
        }
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(JSON));
        headers.insert("grpc-status", grpc_status(self.code.to_grpc()));
        response
    }
}

/// A gRPC service's unary methods served as Twirp, built once at start-up.
pub struct TwirpService<S, I> {
    service: ServiceDescriptor,
    api: Arc<S>,
    interceptor: I,
    handlers: HashMap<String, Handler>,
    body_limit: usize,
}

impl<S, I> std::fmt::Debug for TwirpService<S, I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TwirpService")
            .field("service", &self.service.full_name())
            .field("methods", &self.handlers.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl<S, I> TwirpService<S, I>
where
    S: Send + Sync + 'static,
    I: Interceptor + Clone + Send + Sync + 'static,
{
    /// Twirp for the service `service` (from the API's descriptor pool), implemented by `api`;
    /// every request passes through `interceptor` first, exactly as over gRPC.
    pub fn new(service: ServiceDescriptor, api: Arc<S>, interceptor: I) -> Self {
        Self {
            service,
            api,
            interceptor,
            handlers: HashMap::new(),
            body_limit: DEFAULT_BODY_LIMIT,
        }
    }

    /// Serves the unary RPC `method` by `call`, which receives the service implementation and
    /// the decoded request (its metadata and extensions as the interceptor left them).
    ///
    /// # Panics
    /// If the service has no unary method of that name: a wiring mistake found at start-up.
    pub fn unary<Req, Res, F, Fut>(mut self, method: &str, call: F) -> Self
    where
        Req: prost::Message + Default + 'static,
        Res: prost::Message + 'static,
        F: Fn(Arc<S>, tonic::Request<Req>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<tonic::Response<Res>, Status>> + Send + 'static,
    {
        let descriptor = self.method(method);
        assert!(
            !descriptor.is_client_streaming() && !descriptor.is_server_streaming(),
            "{}/{method} is a streaming RPC and cannot be served as Twirp",
            self.service.full_name()
        );
        let api = self.api.clone();
        let call = Arc::new(call);
        let handler: Handler = Arc::new(move |request: tonic::Request<Bytes>| {
            let api = api.clone();
            let call = call.clone();
            Box::pin(async move {
                let (metadata, extensions, bytes) = request.into_parts();
                let message = Req::decode(bytes).map_err(|error| {
                    Failure::Malformed(format!(
                        "the protobuf request could not be decoded: {error}"
                    ))
                })?;
                let request = tonic::Request::from_parts(metadata, extensions, message);
                let response = call(api, request).await.map_err(Failure::Status)?;
                let (metadata, message, _) = response.into_parts();
                Ok(Reply {
                    metadata,
                    body: message.encode_to_vec(),
                })
            })
        });
        self.handlers.insert(method.to_owned(), handler);
        self
    }

    /// Changes the largest accepted request body (default [`DEFAULT_BODY_LIMIT`]).
    pub fn body_limit(mut self, bytes: usize) -> Self {
        self.body_limit = bytes;
        self
    }

    fn method(&self, name: &str) -> MethodDescriptor {
        self.service
            .methods()
            .find(|method| method.name() == name)
            .unwrap_or_else(|| panic!("{} has no method {name}", self.service.full_name()))
    }

    /// The router serving everything under [`PREFIX`]: merge it into the gRPC routes
    /// (`Routes::into_axum_router().merge(..)`). Every `/twirp/*` path answers as Twirp, so an
    /// unknown one is a Twirp `bad_route` rather than gRPC's UNIMPLEMENTED.
    ///
    /// # Panics
    /// If a unary method of the service has no handler, so that no RPC is silently missing.
    pub fn into_router(self) -> axum::Router {
        let missing: Vec<String> = self
            .service
            .methods()
            .filter(|method| !method.is_client_streaming() && !method.is_server_streaming())
            .filter(|method| !self.handlers.contains_key(method.name()))
            .map(|method| method.name().to_owned())
            .collect();
        assert!(
            missing.is_empty(),
            "every unary RPC of {} needs a Twirp handler; missing: {}",
            self.service.full_name(),
            missing.join(", ")
        );
        let inner = Arc::new(Inner {
            service: self.service,
            handlers: self.handlers,
            body_limit: self.body_limit,
            interceptor: Box::new(self.interceptor),
        });
        let handle = move |request: http::Request<Body>| {
            let inner = inner.clone();
            async move { inner.handle(request).await }
        };
        axum::Router::new()
            .route(PREFIX, axum::routing::any(handle.clone()))
            .route(&format!("{PREFIX}/{{*rest}}"), axum::routing::any(handle))
    }
}

/// An interceptor behind a trait object, so that [`Inner`] is not generic.
trait Authenticate: Send + Sync {
    fn authenticate(&self, request: tonic::Request<()>) -> Result<tonic::Request<()>, Status>;
}

impl<I: Interceptor + Clone + Send + Sync> Authenticate for I {
    fn authenticate(&self, request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        self.clone().call(request)
    }
}

struct Inner {
    service: ServiceDescriptor,
    handlers: HashMap<String, Handler>,
    body_limit: usize,
    interceptor: Box<dyn Authenticate>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Json,
    Protobuf,
}

impl Inner {
    async fn handle(&self, request: http::Request<Body>) -> http::Response<Body> {
        match self.call(request).await {
            Ok(response) => response,
            Err(error) => {
                tracing::debug!(code = error.code.as_str(), msg = %error.msg, "twirp error");
                error.into_response()
            }
        }
    }

    async fn call(&self, request: http::Request<Body>) -> Result<http::Response<Body>, TwirpError> {
        let (parts, body) = request.into_parts();
        let path = parts.uri.path().to_owned();
        let bad_route = |msg: String| TwirpError::bad_route(msg, &parts.method, &path);
        if parts.method != Method::POST {
            return Err(bad_route(format!(
                "unsupported method {} (only POST is allowed)",
                parts.method
            )));
        }
        let route = path
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.strip_prefix('/'))
            .unwrap_or("");
        let Some((service, method_name)) = route.split_once('/') else {
            return Err(bad_route(format!("no handler for path {path:?}")));
        };
        if service != self.service.full_name() {
            return Err(bad_route(format!(
                "no service {service:?} here; this endpoint serves {}",
                self.service.full_name()
            )));
        }
        let Some(method) = self
            .service
            .methods()
            .find(|method| method.name() == method_name)
        else {
            return Err(bad_route(format!(
                "{service} has no method {method_name:?}"
            )));
        };
        if method.is_client_streaming() || method.is_server_streaming() {
            return Err(bad_route(format!(
                "{service}/{method_name} is a streaming RPC: Twirp serves unary RPCs only, call it over gRPC"
            )));
        }
        let handler = self.handlers.get(method_name).ok_or_else(|| {
            bad_route(format!("{service}/{method_name} is not served over Twirp"))
        })?;
        let encoding = match content_type(&parts.headers) {
            Some(JSON) => Encoding::Json,
            Some(PROTOBUF) => Encoding::Protobuf,
            other => {
                return Err(bad_route(format!(
                    "unexpected Content-Type: {:?} (use {JSON} or {PROTOBUF})",
                    other.unwrap_or("")
                )));
            }
        };

        // Authenticate before reading the body, as the gRPC interceptor does.
        let metadata = MetadataMap::from_headers(parts.headers);
        let authenticated = self
            .interceptor
            .authenticate(tonic::Request::from_parts(metadata, parts.extensions, ()))
            .map_err(|status| TwirpError::from_status(&status))?;
        let (metadata, extensions, ()) = authenticated.into_parts();

        let body = axum::body::to_bytes(body, self.body_limit)
            .await
            .map_err(|error| {
                TwirpError::malformed(format!("the request body could not be read: {error}"))
            })?;
        let bytes = match encoding {
            Encoding::Protobuf => body,
            Encoding::Json => json_to_protobuf(method.input(), &body)?,
        };
        let reply = handler(tonic::Request::from_parts(metadata, extensions, bytes))
            .await
            .map_err(|failure| match failure {
                Failure::Malformed(msg) => TwirpError::malformed(msg),
                Failure::Status(status) => TwirpError::from_status(&status),
            })?;
        let (content_type, body) = match encoding {
            Encoding::Protobuf => (PROTOBUF, reply.body),
            Encoding::Json => (JSON, protobuf_to_json(method.output(), &reply.body)?),
        };
        let mut response = http::Response::new(Body::from(body));
        let headers = response.headers_mut();
        for (name, value) in &reply.metadata.into_headers() {
            if !is_transport_header(name) {
                headers.append(name, value.clone());
            }
        }
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        headers.insert("grpc-status", grpc_status(tonic::Code::Ok));
        *response.status_mut() = StatusCode::OK;
        Ok(response)
    }
}

/// The media type of a request, without parameters such as `charset`.
fn content_type(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    Some(value.split(';').next().unwrap_or("").trim())
}

/// Headers of a tonic response that describe the gRPC transport, not the call's metadata.
fn is_transport_header(name: &header::HeaderName) -> bool {
    name == header::CONTENT_TYPE || name.as_str().starts_with("grpc-")
}

fn grpc_status(code: tonic::Code) -> HeaderValue {
    HeaderValue::from(code as i32)
}

/// Decodes canonical protobuf JSON into the protobuf encoding of `message`.
pub fn json_to_protobuf(message: MessageDescriptor, json: &[u8]) -> Result<Bytes, TwirpError> {
    let mut deserializer = serde_json::Deserializer::from_slice(json);
    let options = DeserializeOptions::new().deny_unknown_fields(false);
    let decoded = DynamicMessage::deserialize_with_options(message, &mut deserializer, &options)
        .and_then(|message| deserializer.end().map(|()| message))
        .map_err(|error| {
            TwirpError::malformed(format!("the json request could not be decoded: {error}"))
        })?;
    Ok(prost::Message::encode_to_vec(&decoded).into())
}

/// Encodes the protobuf encoding of `message` as canonical protobuf JSON: lowerCamelCase names,
/// 64-bit integers as strings, enums by name, unset and default fields omitted.
pub fn protobuf_to_json(message: MessageDescriptor, bytes: &[u8]) -> Result<Vec<u8>, TwirpError> {
    let internal = |error: String| {
        tracing::error!(%error, "cannot encode a twirp response as json");
        TwirpError::new(TwirpCode::Internal, "the response could not be encoded")
    };
    let decoded = DynamicMessage::decode(message, bytes).map_err(|e| internal(e.to_string()))?;
    let mut serializer = serde_json::Serializer::new(Vec::new());
    decoded
        .serialize_with_options(&mut serializer, &SerializeOptions::new())
        .map_err(|e| internal(e.to_string()))?;
    Ok(serializer.into_inner())
}

#[cfg(test)]
mod tests;
