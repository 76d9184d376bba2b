//! Integration tests: the real router over HTTP against a real PostgreSQL.

mod helpers;

mod admissions;
mod backstops;
mod binary;
mod catalogue;
mod checkins;
mod concurrency;
mod consistency;
mod errors;
mod events;
mod expiry;
mod faults;
mod fuzz_regressions;
mod idempotency;
mod inputs;
mod internal_errors;
mod lifecycle;
mod load;
mod locks;
mod mixed_storm;
mod onsale;
mod openapi;
mod orders;
mod payments;
mod proxy;
mod purchase;
mod races;
mod reads;
mod refunds;
mod report;
mod security;
mod status_machine;
mod stream;
mod timeouts;
mod tokens;
