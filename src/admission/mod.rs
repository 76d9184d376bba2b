//! Admission at the door (docs/admission.md): the keys ticket codes are signed and verified
//! with.

pub mod keys;
