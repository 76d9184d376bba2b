//! Validated input types, records and the allocation state machine.
//! Nothing here knows about HTTP or SQL.

pub mod admission;
pub mod allocation;
pub mod catalogue;
pub mod checkin;
pub mod confirmation;
pub mod event;
mod event_name;
pub mod fingerprint;
pub mod grant;
pub mod hex;
pub mod idempotency;
pub mod money;
pub mod order;
pub mod page;
pub mod patch;
pub mod quantity;
pub mod refund;
pub mod refusal;
pub mod report;
pub mod stats;
pub mod status;
pub mod token;
pub mod waiting_list;
