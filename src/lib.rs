//! Boxoffice: an HTTP ticket-selling service that never sells a ticket twice or a ticket
//! that does not exist.
//!
//! Layers: [`http`] (routing and thin handlers) → [`purchase`] and [`holds`] (the
//! transactions and their locks) → [`db`] (all SQL). [`domain`] holds validated types and
//! the allocation state machine; [`sweeper`] is the background expiry job.

pub mod config;
pub mod db;
pub mod domain;
pub mod embedded_pg;
pub mod error;
pub mod holds;
pub mod http;
pub mod idempotency;
pub mod live;
pub mod metrics;
pub mod payment;
pub mod purchase;
pub mod server;
pub mod sweeper;
