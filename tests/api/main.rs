//! Integration tests: the real router over HTTP against a real PostgreSQL.

mod helpers;

mod binary;
mod errors;
mod events;
