//! The test harness. Every test gets its own database, cloned from a migrated template, and
//! its own real server on 127.0.0.1:0 (in process, or the real binary as a separate process).
//!
//! - [`database`]: the throwaway cluster, the template, fresh and empty databases, and a
//!   dedicated cluster a test may stop and restart;
//! - [`api`]: requests to a running server, shared by the in-process app and the process;
//! - [`app`]: the in-process app ([`TestApp`], `spawn_app*`);
//! - [`process`]: the real binary as a separate process ([`ServerProcess`]);
//! - [`storm`]: many buyers at once (the load crate's storm), with a record of every
//!   promise made to them;
//! - [`sse`]: the Server-Sent Events reader;
//! - [`assertions`]: counts that balance, the error shape, polling;
//! - [`blocker`]: a transaction that holds row locks while requests are sent;
//! - [`db_proxy`]: a proxy between an app and its database that loses answers on command.

mod api;
mod app;
mod assertions;
mod blocker;
mod database;
mod db_proxy;
mod process;
mod sse;
mod storm;

pub use api::*;
pub use app::*;
pub use assertions::*;
pub use blocker::*;
pub use database::*;
pub use db_proxy::*;
pub use process::*;
pub use sse::*;
pub use storm::*;
