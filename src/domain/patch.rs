//! Partial updates (`PATCH`): a field is absent (unchanged), `null` (cleared, where the field
//! may be empty) or a new value, and each new value is checked like the one a `POST` takes.

use super::refusal::FieldError;

/// A field of a partial update: `None` when absent (unchanged), `Some(None)` for an explicit
/// `null`, `Some(Some(value))` for a new value.
pub type Patch<T> = Option<Option<T>>;

/// The value of a field that is always set, after `patch`: the current value when absent,
/// else the parsed new one. `current` is `None` when creating, where the field is required.
/// A problem is pushed onto `errors` against `field`, and `None` returned.
pub fn required<T, U>(
    field: &str,
    patch: Patch<T>,
    current: Option<U>,
    parse: impl FnOnce(T) -> Result<U, String>,
    errors: &mut Vec<FieldError>,
) -> Option<U> {
    let creating = current.is_none();
    let result = match patch {
        None => current.ok_or_else(|| "is required".to_owned()),
        Some(None) if creating => Err("is required".to_owned()),
        Some(None) => Err("must not be null".to_owned()),
        Some(Some(value)) => parse(value),
    };
    result
        .map_err(|message| errors.push(FieldError::new(field, message)))
        .ok()
}

/// The value of a field that may be empty, after `patch`: the current value when absent,
/// empty for `null`, else the parsed new one. A problem is pushed onto `errors` against
/// `field`, and the field comes back empty (the caller then refuses the whole request).
pub fn nullable<T, U>(
    field: &str,
    patch: Patch<T>,
    current: Option<U>,
    parse: impl FnOnce(T) -> Result<U, String>,
    errors: &mut Vec<FieldError>,
) -> Option<U> {
    match patch {
        None => current,
        Some(None) => None,
        Some(Some(value)) => parse(value)
            .map_err(|message| errors.push(FieldError::new(field, message)))
            .ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn positive(n: i64) -> Result<i64, String> {
        if n > 0 {
            Ok(n)
        } else {
            Err("must be positive".into())
        }
    }

    #[test]
    fn absent_keeps_null_clears_or_is_refused_and_values_are_parsed() {
        let mut errors = Vec::new();
        assert_eq!(required("a", None, Some(1), positive, &mut errors), Some(1));
        assert_eq!(
            required("a", Some(Some(2)), Some(1), positive, &mut errors),
            Some(2)
        );
        assert_eq!(nullable("b", None, Some(1), positive, &mut errors), Some(1));
        assert_eq!(
            nullable("b", Some(None), Some(1), positive, &mut errors),
            None
        );
        assert!(errors.is_empty());
        assert_eq!(
            required("c", Some(None), Some(1), positive, &mut errors),
            None
        );
        assert_eq!(
            required::<i64, i64>("d", None, None, positive, &mut errors),
            None
        );
        assert_eq!(
            required("e", Some(Some(0)), None, positive, &mut errors),
            None
        );
        assert_eq!(
            nullable("f", Some(Some(0)), Some(1), positive, &mut errors),
            None
        );
        let described: Vec<(&str, &str)> = errors
            .iter()
            .map(|e| (e.field.as_str(), e.message.as_str()))
            .collect();
        assert_eq!(
            described,
            [
                ("c", "must not be null"),
                ("d", "is required"),
                ("e", "must be positive"),
                ("f", "must be positive"),
            ]
        );
    }
}
