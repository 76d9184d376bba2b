//! Admission at the door (docs/admission.md): the keys ticket codes are signed and verified
//! with, and check-in (one scan, or a batch of offline scans).

pub mod checkin;
pub mod keys;
