//! The consumer gateway through gRPC, against the foundation services running in-process on
//! port 0.

mod authorization_matrix;
mod commands;
mod downloads;
mod fanout;
mod fixture;
mod governance;
mod hardening;
mod queries;
mod resilience;
mod tls;
mod tokens;
