//! Tests of the creator gateway through its gRPC interface: tracks, likes and counts run
//! in-process on ephemeral ports (SQLite in memory, no seed), the gateway in front of them.
//! One test binary with modules keeps linking cheap.

mod commands;
mod failures;
mod governance;
mod queries;
mod support;
mod upload;
