//! Tests of the counts service through its gRPC interface, in-process on ephemeral ports, on
//! SQLite and, when `TEST_DATABASE_URL` is set, on PostgreSQL too.

mod apply_events;
mod mutual_tls;
