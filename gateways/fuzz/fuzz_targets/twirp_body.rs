//! Arbitrary bytes as the body of a Twirp request to either gateway, in both encodings, through
//! the transcoding the Twirp bridge serves them with (`twirp_bridge::json_to_protobuf` and
//! `protobuf_to_json`, against each gateway's descriptors).
//!
//! Input: `[method, encoding, body (the rest)]`; `method` picks one unary request message of the
//! consumer or the creator gateway. Checks: nothing panics; a JSON body either is refused as
//! malformed or becomes protobuf that the request type decodes, whose canonical JSON decodes back
//! to the same message; a protobuf body that the request type decodes has a canonical JSON form
//! that decodes back to the same message.

#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use prost::Message;
use prost_reflect::{DynamicMessage, MessageDescriptor};

/// Every unary request message of both gateways.
static REQUESTS: LazyLock<Vec<MessageDescriptor>> = LazyLock::new(|| {
    let mut requests = Vec::new();
    for (set, service) in [
        (protos::descriptors::CONSUMER, "consumer.v1.ConsumerGateway"),
        (protos::descriptors::CREATOR, "creator.v1.CreatorGateway"),
    ] {
        let pool = prost_reflect::DescriptorPool::decode(set).expect("the descriptor set decodes");
        let service = pool.get_service_by_name(service).expect("the gateway's service");
        requests.extend(
            service
                .methods()
                .filter(|method| !method.is_client_streaming() && !method.is_server_streaming())
                .map(|method| method.input()),
        );
    }
    requests
});

fn same_message(descriptor: &MessageDescriptor, a: &[u8], b: &[u8]) -> bool {
    let decode = |bytes: &[u8]| DynamicMessage::decode(descriptor.clone(), bytes).ok();
    decode(a) == decode(b)
}

fuzz_target!(|data: &[u8]| {
    let [method, encoding, body @ ..] = data else {
        return;
    };
    let descriptor = &REQUESTS[*method as usize % REQUESTS.len()];
    let protobuf = if encoding % 2 == 0 {
        match twirp_bridge::json_to_protobuf(descriptor.clone(), body) {
            Ok(protobuf) => protobuf.to_vec(),
            Err(error) => {
                assert_eq!(error.code.as_str(), "malformed", "{}", error.msg);
                return;
            }
        }
    } else {
        if DynamicMessage::decode(descriptor.clone(), body).is_err() {
            return;
        }
        body.to_vec()
    };
    let decoded = DynamicMessage::decode(descriptor.clone(), protobuf.as_slice())
        .expect("transcoded protobuf decodes as the request");
    let json = twirp_bridge::protobuf_to_json(descriptor.clone(), &decoded.encode_to_vec())
        .expect("a decoded request has a JSON form");
    let again = twirp_bridge::json_to_protobuf(descriptor.clone(), &json)
        .expect("canonical JSON decodes");
    assert!(
        same_message(descriptor, &protobuf, &again),
        "the JSON form of a request decodes to another request: {}",
        String::from_utf8_lossy(&json)
    );
});
