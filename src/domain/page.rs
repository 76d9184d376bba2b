//! Pagination parameters and the list envelope shared by every list endpoint.

use serde::Serialize;

pub const DEFAULT_LIMIT: i64 = 10;
pub const MAX_LIMIT: i64 = 100;
/// Highest page number: far beyond any real list, and small enough that the offset
/// (page - 1) * limit can never overflow.
pub const MAX_PAGE: i64 = 1_000_000_000;

/// A valid page request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    pub page: i64,
    pub limit: i64,
}

impl PageRequest {
    /// Checks `?page=&limit=` as given (text, so a bad value is reported by name); returns
    /// the offending parameter and why, for a 400.
    pub fn parse(page: Option<&str>, limit: Option<&str>) -> Result<Self, (&'static str, String)> {
        let page = parse_bounded(page, "page", 1, MAX_PAGE, 1)?;
        let limit = parse_bounded(limit, "limit", 1, MAX_LIMIT, DEFAULT_LIMIT)?;
        Ok(Self { page, limit })
    }

    pub fn offset(self) -> i64 {
        (self.page - 1) * self.limit
    }
}

fn parse_bounded(
    raw: Option<&str>,
    name: &'static str,
    min: i64,
    max: i64,
    default: i64,
) -> Result<i64, (&'static str, String)> {
    let Some(raw) = raw else { return Ok(default) };
    match raw.trim().parse::<i64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err((name, format!("must be an integer from {min} to {max}"))),
    }
}

/// Where a page sits in the whole list.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PageMeta {
    /// Items in the whole list.
    pub total: i64,
    pub page: i64,
    pub limit: i64,
    /// Number of pages (0 when the list is empty).
    pub pages: i64,
}

/// One page of a list: `{"data": [...], "meta": {...}}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Page<T> {
    pub data: Vec<T>,
    pub meta: PageMeta,
}

impl<T> Page<T> {
    pub fn new(data: Vec<T>, total: i64, request: PageRequest) -> Self {
        let pages = (total + request.limit - 1) / request.limit;
        Self {
            data,
            meta: PageMeta {
                total,
                page: request.page,
                limit: request.limit,
                pages,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_bounds() {
        assert_eq!(
            PageRequest::parse(None, None),
            Ok(PageRequest { page: 1, limit: 10 })
        );
        assert_eq!(
            PageRequest::parse(Some("3"), Some("100")).map(|p| p.offset()),
            Ok(200)
        );
        assert_eq!(PageRequest::parse(Some("0"), None).unwrap_err().0, "page");
        assert_eq!(
            PageRequest::parse(None, Some("101")).unwrap_err().0,
            "limit"
        );
        assert_eq!(PageRequest::parse(None, Some("0")).unwrap_err().0, "limit");
        assert_eq!(PageRequest::parse(Some("x"), None).unwrap_err().0, "page");
    }

    #[test]
    fn page_count_rounds_up() {
        let req = PageRequest { page: 1, limit: 10 };
        assert_eq!(Page::<u8>::new(vec![], 0, req).meta.pages, 0);
        assert_eq!(Page::<u8>::new(vec![], 10, req).meta.pages, 1);
        assert_eq!(Page::<u8>::new(vec![], 11, req).meta.pages, 2);
    }
}
