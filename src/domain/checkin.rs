//! Check-in at the door (docs/admission.md): the inputs of a scan, the refusals a scan can
//! meet, and the rule that decides an uploaded batch of offline scans.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

/// Longest gate name, in characters.
pub const MAX_GATE_CHARS: usize = 64;
/// Longest nonce, in characters.
pub const MAX_NONCE_CHARS: usize = 128;
/// Most scans one batch upload may carry.
pub const MAX_BATCH_SCANS: usize = 1_000;

/// Where a scan was made: 1 to 64 characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Gate(String);

impl Gate {
    /// A gate from its name as sent, normalized as event names are (NFC, whitespace runs made
    /// one space, invisible characters around it trimmed), so gates that look the same count
    /// as one in the statistics. Errors: nothing visible, longer than 64 characters after
    /// normalization, or holding a control character.
    pub fn parse(raw: &str) -> Result<Self, String> {
        if raw.chars().any(char::is_control) {
            return Err("must not contain control characters".into());
        }
        let name = super::event_name::normalize_name(raw);
        if super::event_name::is_blank(&name) {
            return Err("must contain a visible character".into());
        }
        if name.chars().count() > MAX_GATE_CHARS {
            return Err(format!("must be 1 to {MAX_GATE_CHARS} characters"));
        }
        Ok(Self(name))
    }

    /// The name as stored and answered.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A door device's name for one scan, so a retried scan gets the first answer: 1 to 128
/// characters of `[A-Za-z0-9._:-]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Nonce(String);

impl Nonce {
    /// A nonce as sent. Errors: empty, longer than 128 characters, or another character.
    pub fn parse(raw: &str) -> Result<Self, String> {
        if raw.is_empty() || raw.len() > MAX_NONCE_CHARS {
            return Err(format!("must be 1 to {MAX_NONCE_CHARS} characters"));
        }
        if !raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".:_-".contains(&b))
        {
            return Err("must contain only the characters A-Z a-z 0-9 . _ : -".into());
        }
        Ok(Self(raw.to_owned()))
    }

    /// The nonce as stored.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A check-in as it stands: when and at which gate the admission was checked in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedIn {
    pub at: OffsetDateTime,
    pub gate: Option<String>,
}

/// Why a scan does not admit. Each is a normal answer at the door, not a failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScanRefusal {
    /// Malformed, badly signed, signed by an unknown key, or naming no admission.
    #[error("this is not a valid ticket code")]
    InvalidCode,
    /// A valid code of another event.
    #[error("this ticket is for another event")]
    WrongEvent,
    /// The admission was revoked by a refund.
    #[error("this ticket was refunded and no longer admits")]
    Revoked,
    /// The admission was checked in before: `first` is that check-in.
    #[error("this ticket was already checked in")]
    AlreadyCheckedIn { first: CheckedIn },
    /// The nonce was first used for a scan of another admission.
    #[error("this nonce was already used for a scan of another ticket")]
    NonceReused,
}

/// The answer to one scan of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ScanResult {
    /// This scan is the admission's check-in.
    Admitted,
    /// The admission was checked in by another scan (`firstCheckedInAt`, `firstGate`).
    Duplicate,
    /// The admission was revoked by a refund.
    Revoked,
    /// Not a valid code of an admission (or its nonce was used for another admission).
    Invalid,
    /// A valid code of another event.
    WrongEvent,
}

impl ScanResult {
    /// The name stored in `checkin_scans.result` and answered.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Admitted => "admitted",
            Self::Duplicate => "duplicate",
            Self::Revoked => "revoked",
            Self::Invalid => "invalid",
            Self::WrongEvent => "wrong_event",
        }
    }

    /// The stored name back (only the three stored results are ever read).
    pub fn parse(stored: &str) -> Option<Self> {
        [Self::Admitted, Self::Duplicate, Self::Revoked]
            .into_iter()
            .find(|r| r.as_str() == stored)
    }
}

/// An admission as a batch finds it, locked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DoorState {
    Valid,
    /// Checked in; `nonce` is the scan that did it, when one was recorded.
    CheckedIn {
        first: CheckedIn,
        nonce: Option<String>,
    },
    Revoked {
        first: Option<CheckedIn>,
    },
}

/// One offline scan of a known admission of the event, its nonce not seen before.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfflineScan {
    pub admission_id: Uuid,
    pub nonce: Nonce,
    pub gate: Option<String>,
    /// When the device scanned it, no later than the upload (see [`clamp_scanned_at`]).
    pub at: OffsetDateTime,
}

/// What a batch decided for one scan: its result and the admission's check-in as answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanOutcome {
    pub result: ScanResult,
    pub first: Option<CheckedIn>,
}

/// Two scans that both let one person in. `admitted` is the earlier, which stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    pub admission_id: Uuid,
    pub admitted: CheckedIn,
    pub admitted_nonce: Option<String>,
    pub conflicting: CheckedIn,
    pub conflicting_nonce: Option<String>,
}

/// What a batch changes: each scan's outcome (in the order given), the admissions whose
/// check-in is now set or moved earlier, and the conflicts to record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchDecision {
    pub outcomes: Vec<ScanOutcome>,
    pub check_ins: Vec<(Uuid, CheckedIn)>,
    pub conflicts: Vec<Conflict>,
}

/// Decides a batch of offline scans against the admissions as they stand (locked by the
/// caller). The earliest scan of an admission, online or offline, is its check-in:
///
/// - a valid admission is checked in by the batch's earliest scan of it;
/// - a checked-in admission whose check-in is later than the batch's earliest scan of it is
///   moved back to that scan, and the check-in it had becomes a conflict; otherwise that scan
///   is the conflict (the device let in someone already let in);
/// - the batch's later scans of one admission are duplicates and no conflict: a device
///   remembers what it scanned and showed them red;
/// - a revoked admission refuses every scan.
///
/// Scans of one admission are ordered by time, then nonce (a check-in without one first), so
/// the decision does not depend on the order of the uploads.
pub fn decide_batch(scans: &[OfflineScan], states: &HashMap<Uuid, DoorState>) -> BatchDecision {
    let mut by_admission: HashMap<Uuid, Vec<usize>> = HashMap::new();
    for (i, scan) in scans.iter().enumerate() {
        by_admission.entry(scan.admission_id).or_default().push(i);
    }
    let mut outcomes: Vec<Option<ScanOutcome>> = vec![None; scans.len()];
    let mut decision = BatchDecision::default();
    let mut admissions: Vec<_> = by_admission.into_iter().collect();
    admissions.sort_by_key(|(id, _)| *id);
    for (admission_id, mut indexes) in admissions {
        indexes
            .sort_by(|&a, &b| (scans[a].at, &scans[a].nonce).cmp(&(scans[b].at, &scans[b].nonce)));
        let earliest = &scans[indexes[0]];
        let scanned = CheckedIn {
            at: earliest.at,
            gate: earliest.gate.clone(),
        };
        let (first_result, first) = match states.get(&admission_id) {
            None => continue,
            Some(DoorState::Revoked { first }) => {
                for &i in &indexes {
                    outcomes[i] = Some(ScanOutcome {
                        result: ScanResult::Revoked,
                        first: first.clone(),
                    });
                }
                continue;
            }
            Some(DoorState::Valid) => {
                decision.check_ins.push((admission_id, scanned.clone()));
                (ScanResult::Admitted, scanned)
            }
            // Earlier by time, then by nonce, as within a batch, so that two devices' scans
            // at one instant end the same whichever uploads first; a check-in recorded
            // without a nonce (an online scan) stands against a scan at its very instant.
            Some(DoorState::CheckedIn { first, nonce })
                if (scanned.at, Some(earliest.nonce.as_str())) < (first.at, nonce.as_deref()) =>
            {
                decision.check_ins.push((admission_id, scanned.clone()));
                decision.conflicts.push(Conflict {
                    admission_id,
                    admitted: scanned.clone(),
                    admitted_nonce: Some(earliest.nonce.as_str().to_owned()),
                    conflicting: first.clone(),
                    conflicting_nonce: nonce.clone(),
                });
                (ScanResult::Admitted, scanned)
            }
            Some(DoorState::CheckedIn { first, nonce }) => {
                decision.conflicts.push(Conflict {
                    admission_id,
                    admitted: first.clone(),
                    admitted_nonce: nonce.clone(),
                    conflicting: scanned,
                    conflicting_nonce: Some(earliest.nonce.as_str().to_owned()),
                });
                (ScanResult::Duplicate, first.clone())
            }
        };
        for (n, &i) in indexes.iter().enumerate() {
            outcomes[i] = Some(ScanOutcome {
                result: if n == 0 {
                    first_result
                } else {
                    ScanResult::Duplicate
                },
                first: Some(first.clone()),
            });
        }
    }
    decision.outcomes = outcomes
        .into_iter()
        .map(|outcome| {
            // A scan of an admission the caller found none of: not a valid code.
            outcome.unwrap_or(ScanOutcome {
                result: ScanResult::Invalid,
                first: None,
            })
        })
        .collect();
    decision
}

/// A device's scan time, kept unless it is later than `now` (the upload), which it then
/// becomes: a device clock running ahead cannot date a check-in in the future. Rounded to the
/// microseconds the database keeps.
pub fn clamp_scanned_at(scanned_at: OffsetDateTime, now: OffsetDateTime) -> OffsetDateTime {
    super::event::to_stored_precision(scanned_at.min(now))
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn scan(admission: Uuid, nonce: &str, gate: &str, at: OffsetDateTime) -> OfflineScan {
        OfflineScan {
            admission_id: admission,
            nonce: Nonce::parse(nonce).unwrap(),
            gate: Some(gate.into()),
            at,
        }
    }

    fn at(gate: &str, at: OffsetDateTime) -> CheckedIn {
        CheckedIn {
            at,
            gate: Some(gate.into()),
        }
    }

    #[test]
    fn gates_and_nonces_are_checked() {
        assert!(Gate::parse("North 1").is_ok());
        assert!(Gate::parse("").is_err());
        assert!(Gate::parse(&"g".repeat(65)).is_err());
        assert!(Gate::parse(&"é".repeat(64)).is_ok());
        assert!(Gate::parse("a\nb").is_err());
        // Normalized as event names are: gates that look the same are one gate.
        assert_eq!(
            Gate::parse("Cafe\u{301}").unwrap(),
            Gate::parse("Caf\u{e9}").unwrap()
        );
        assert_eq!(
            Gate::parse("  North \u{a0} 1\u{200b}").unwrap().as_str(),
            "North 1"
        );
        assert_eq!(
            Gate::parse("\u{202e}North\u{200b}").unwrap().as_str(),
            "North"
        );
        assert_eq!(Gate::parse("a\u{2028}b").unwrap().as_str(), "a b");
        for blank in ["   ", "\u{200b}", "\u{2800}", "\u{a0}\u{3000}"] {
            assert!(Gate::parse(blank).is_err(), "{blank:?}");
        }
        assert!(Nonce::parse("dev-1:42.a_b").is_ok());
        assert!(Nonce::parse("").is_err());
        assert!(Nonce::parse("a b").is_err());
        assert!(Nonce::parse(&"n".repeat(129)).is_err());
    }

    #[test]
    fn the_earliest_scan_admits_and_later_ones_of_the_batch_are_plain_duplicates() {
        let a = Uuid::from_u128(1);
        let t0 = datetime!(2026-12-01 20:00 UTC);
        let scans = [
            scan(a, "n2", "B", t0 + time::Duration::minutes(1)),
            scan(a, "n1", "A", t0),
        ];
        let states = HashMap::from([(a, DoorState::Valid)]);
        let decision = decide_batch(&scans, &states);
        assert_eq!(decision.check_ins, vec![(a, at("A", t0))]);
        assert_eq!(decision.outcomes[1].result, ScanResult::Admitted);
        assert_eq!(decision.outcomes[0].result, ScanResult::Duplicate);
        assert_eq!(decision.outcomes[0].first, Some(at("A", t0)));
        assert!(decision.conflicts.is_empty());
    }

    #[test]
    fn an_earlier_offline_scan_moves_the_check_in_and_records_the_later_as_conflict() {
        let a = Uuid::from_u128(1);
        let t0 = datetime!(2026-12-01 20:00 UTC);
        let online = at("Online", t0 + time::Duration::minutes(5));
        let states = HashMap::from([(
            a,
            DoorState::CheckedIn {
                first: online.clone(),
                nonce: None,
            },
        )]);
        let decision = decide_batch(&[scan(a, "off", "Offline", t0)], &states);
        assert_eq!(decision.outcomes[0].result, ScanResult::Admitted);
        assert_eq!(decision.check_ins, vec![(a, at("Offline", t0))]);
        assert_eq!(decision.conflicts.len(), 1);
        assert_eq!(decision.conflicts[0].admitted, at("Offline", t0));
        assert_eq!(decision.conflicts[0].conflicting, online);

        // Later than the check-in: the scan is the conflict, the check-in stays.
        let late = decide_batch(
            &[scan(a, "late", "L", t0 + time::Duration::hours(1))],
            &states,
        );
        assert_eq!(late.outcomes[0].result, ScanResult::Duplicate);
        assert_eq!(late.outcomes[0].first, Some(online.clone()));
        assert!(late.check_ins.is_empty());
        assert_eq!(late.conflicts[0].admitted, online);
    }

    #[test]
    fn revoked_and_unknown_admissions_never_admit() {
        let (revoked, unknown) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let t0 = datetime!(2026-12-01 20:00 UTC);
        let states = HashMap::from([(revoked, DoorState::Revoked { first: None })]);
        let decision = decide_batch(
            &[scan(revoked, "r", "A", t0), scan(unknown, "u", "A", t0)],
            &states,
        );
        assert_eq!(decision.outcomes[0].result, ScanResult::Revoked);
        assert_eq!(decision.outcomes[1].result, ScanResult::Invalid);
        assert!(decision.check_ins.is_empty() && decision.conflicts.is_empty());
    }

    #[test]
    fn a_scan_time_in_the_future_becomes_the_upload_time() {
        let now = datetime!(2026-12-01 20:00 UTC);
        assert_eq!(clamp_scanned_at(now + time::Duration::hours(1), now), now);
        let past = datetime!(2026-12-01 19:00:00.123456789 UTC);
        assert_eq!(
            clamp_scanned_at(past, now),
            datetime!(2026-12-01 19:00:00.123456 UTC)
        );
    }

    #[test]
    fn scans_at_one_instant_from_two_uploads_end_the_same_in_either_order() {
        let a = Uuid::from_u128(1);
        let t0 = datetime!(2026-12-01 20:00 UTC);
        let decide = |standing: &OfflineScan, arriving: &OfflineScan| {
            let states = HashMap::from([(
                a,
                DoorState::CheckedIn {
                    first: at(standing.gate.as_deref().unwrap(), standing.at),
                    nonce: Some(standing.nonce.as_str().to_owned()),
                },
            )]);
            let conflict = decide_batch(std::slice::from_ref(arriving), &states).conflicts;
            assert_eq!(conflict.len(), 1);
            (
                conflict[0].admitted_nonce.clone(),
                conflict[0].conflicting_nonce.clone(),
            )
        };
        let (low, high) = (scan(a, "n1", "A", t0), scan(a, "n2", "B", t0));
        let expected = (Some("n1".to_owned()), Some("n2".to_owned()));
        assert_eq!(decide(&low, &high), expected);
        assert_eq!(decide(&high, &low), expected);
        // An online check-in (no nonce) at the same instant stands.
        let online = HashMap::from([(
            a,
            DoorState::CheckedIn {
                first: at("Online", t0),
                nonce: None,
            },
        )]);
        let decision = decide_batch(&[low], &online);
        assert_eq!(decision.outcomes[0].result, ScanResult::Duplicate);
        assert!(decision.check_ins.is_empty());
    }
}
