//! Tests of the likes service through its gRPC interface, in-process on ephemeral ports; the
//! outbox, dead-letter and seed tests run a counts service beside it. Storage-touching scenarios
//! run on SQLite and, when `TEST_DATABASE_URL` is set, on PostgreSQL too.

mod commands;
mod dead_letters;
mod faults;
mod nats;
mod operability;
mod outbox;
mod replicas;
mod seed;
mod support;
