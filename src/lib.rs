//! Boxoffice: an HTTP ticket-selling service that never sells a ticket twice or a ticket
//! that does not exist.
//!
//! Layers, imports flowing one way (checked by the `layers` test, `src/layers.rs`):
//!
//! - [`http`]: routing, extractors, handlers, the HTTP state and the one mapping of errors to
//!   responses;
//! - services: [`purchase`] (the purchase transaction and its lock), [`holds`] (pay, cancel,
//!   expire), [`catalogue`] (event settings, ticket types and quotas), [`idempotency`] (keyed retries), [`live`] (live statistics), [`reads`] (coalesced reads of an event), [`payment`] (the
//!   provider), [`sweeper`] (the background expiry job) and [`tokens`] (scoped API tokens), returning [`error::Error`];
//! - [`db`]: all SQL, and what a database error means;
//! - [`domain`]: validated types, the allocation state machine and the refusals; it imports
//!   nothing of the app.
//!
//! [`server`] builds and wires them from [`config`]; [`metrics`] imports nothing of the app,
//! and [`embedded_pg`] only the domain's hex encoder.

pub mod admission;
pub mod catalogue;
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
pub mod offers;
pub mod payment;
pub mod purchase;
pub mod reads;
pub mod server;
pub mod sweeper;
pub mod tokens;
pub mod waiting_list;

#[cfg(test)]
mod layers;
