//! The `quota` and `spend_cap` of a key on the API (SPEC §11): read from a
//! create or `PATCH` body, checked (a 400 naming the field), and shown in
//! the key views with what is used in the current period and when it
//! refills. The budgets themselves live in crate::store::caps.

use crate::body::Fields;
use crate::clock;
use crate::errors::ApiError;
use crate::store::caps::{Budget, Caps, CapsChange, Period};
use serde::Serialize;
use utoipa::ToSchema;

/// Largest quota or cap: exact in every JSON reader.
pub const MAX_LIMIT: u64 = 1 << 53;

/// A request quota, as asked (`quota`).
#[derive(Debug, Default, Clone, PartialEq, Eq, ToSchema)]
#[schema(as = Quota)]
pub struct QuotaDraft {
    /// Allowed requests per period (1 to 2^53).
    #[schema(required = true, value_type = u64, minimum = 1, maximum = 9007199254740992_u64)]
    pub requests: Option<u64>,
    /// `daily` or `monthly` (UTC calendar day or month); `null` or absent:
    /// never refilled.
    #[schema(value_type = Option<RefillName>, nullable = true)]
    pub refill: Option<String>,
}

/// A spending cap, as asked (`spend_cap`).
#[derive(Debug, Default, Clone, PartialEq, Eq, ToSchema)]
#[schema(as = SpendCap)]
pub struct SpendCapDraft {
    /// Cost in micro-units (the upstream's `x-keygate-cost`) per period
    /// (1 to 2^53).
    #[schema(required = true, value_type = u64, minimum = 1, maximum = 9007199254740992_u64)]
    pub micros: Option<u64>,
    /// `month` (UTC calendar month); `null` or absent: never refilled.
    #[schema(value_type = Option<PeriodName>, nullable = true)]
    pub period: Option<String>,
}

/// A quota's refill.
#[derive(ToSchema)]
#[schema(as = QuotaRefill)]
#[allow(dead_code)]
pub enum RefillName {
    #[schema(rename = "daily")]
    Daily,
    #[schema(rename = "monthly")]
    Monthly,
}

/// A spending cap's period.
#[derive(ToSchema)]
#[schema(as = SpendPeriod)]
#[allow(dead_code)]
pub enum PeriodName {
    #[schema(rename = "month")]
    Month,
}

/// Both fields of a body: absent `None`, `null` `Some(None)`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CapsDraft {
    pub quota: Option<Option<QuotaDraft>>,
    pub spend_cap: Option<Option<SpendCapDraft>>,
}

impl CapsDraft {
    /// Reads `quota` and `spend_cap` of `f`.
    pub fn from_fields(f: &mut Fields) -> Result<CapsDraft, ApiError> {
        Ok(CapsDraft {
            quota: f.clearable("quota", |f, name| {
                let Some(mut q) = f.nested(name, &["requests", "refill"])? else {
                    return Ok(None);
                };
                Ok(Some(QuotaDraft {
                    requests: q.integer("requests")?,
                    refill: q.string("refill")?,
                }))
            })?,
            spend_cap: f.clearable("spend_cap", |f, name| {
                let Some(mut c) = f.nested(name, &["micros", "period"])? else {
                    return Ok(None);
                };
                Ok(Some(SpendCapDraft {
                    micros: c.integer("micros")?,
                    period: c.string("period")?,
                }))
            })?,
        })
    }

    /// The checked change at `now`; `None` when neither field was given.
    pub fn check(self, now: u64) -> Result<Option<CapsChange>, ApiError> {
        if self.quota.is_none() && self.spend_cap.is_none() {
            return Ok(None);
        }
        let quota = self
            .quota
            .map(|q| q.map(QuotaDraft::check).transpose())
            .transpose()?;
        let spend = self
            .spend_cap
            .map(|c| c.map(SpendCapDraft::check).transpose())
            .transpose()?;
        Ok(Some(CapsChange {
            quota,
            spend,
            reset: false,
            now,
        }))
    }

    /// The caps of a new key at `now`.
    pub fn new_caps(self, now: u64) -> Result<Caps, ApiError> {
        Ok(self
            .check(now)?
            .map_or_else(Caps::default, |change| change.apply(&Caps::default())))
    }
}

/// A limit: 1 to 2^53.
fn limit(value: Option<u64>, field: &str) -> Result<u64, ApiError> {
    value
        .filter(|v| (1..=MAX_LIMIT).contains(v))
        .ok_or_else(|| {
            ApiError::invalid(field, format!("{field} must be an integer from 1 to 2^53"))
        })
}

impl QuotaDraft {
    fn check(self) -> Result<(u64, Period), ApiError> {
        let period = match self.refill.as_deref() {
            None => Period::Lifetime,
            Some("daily") => Period::Day,
            Some("monthly") => Period::Month,
            Some(_) => {
                return Err(ApiError::invalid(
                    "quota.refill",
                    "quota.refill must be \"daily\", \"monthly\" or null",
                ))
            }
        };
        Ok((limit(self.requests, "quota.requests")?, period))
    }
}

impl SpendCapDraft {
    fn check(self) -> Result<(u64, Period), ApiError> {
        let period = match self.period.as_deref() {
            None => Period::Lifetime,
            Some("month") => Period::Month,
            Some(_) => {
                return Err(ApiError::invalid(
                    "spend_cap.period",
                    "spend_cap.period must be \"month\" or null",
                ))
            }
        };
        Ok((limit(self.micros, "spend_cap.micros")?, period))
    }
}

/// A key's quota as shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct QuotaView {
    pub requests: u64,
    #[schema(value_type = Option<RefillName>)]
    pub refill: Option<&'static str>,
    /// Allowed requests counted in the current period (as the usage
    /// batches told: up to one batch interval behind).
    pub used: u64,
    /// When the count starts again; `null` when never.
    #[schema(format = DateTime)]
    pub resets_at: Option<String>,
    /// Used up: the key is refused with 402 until a refill, raise or reset.
    pub exhausted: bool,
}

/// A key's spending cap as shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct SpendCapView {
    pub micros: u64,
    #[schema(value_type = Option<PeriodName>)]
    pub period: Option<&'static str>,
    /// Cost (micro-units) counted in the current period.
    pub used: u64,
    /// When the count starts again; `null` when never.
    #[schema(format = DateTime)]
    pub resets_at: Option<String>,
    /// Used up: the key is refused with 402 until a refill, raise or reset.
    pub exhausted: bool,
}

/// What a budget shows at `now`: used, when it resets, and whether it is
/// used up (all as of the current period).
fn shown(budget: &Budget, now: u64) -> (u64, Option<String>, bool) {
    let mut current = *budget;
    current.refill(now);
    (
        current.used,
        current.resets_at().map(clock::rfc3339),
        current.exhausted(),
    )
}

impl QuotaView {
    pub fn of(caps: &Caps, now: u64) -> Option<QuotaView> {
        caps.quota.map(|q| {
            let (used, resets_at, exhausted) = shown(&q, now);
            QuotaView {
                requests: q.limit,
                refill: match q.period {
                    Period::Lifetime => None,
                    Period::Day => Some("daily"),
                    Period::Month => Some("monthly"),
                },
                used,
                resets_at,
                exhausted,
            }
        })
    }
}

impl SpendCapView {
    pub fn of(caps: &Caps, now: u64) -> Option<SpendCapView> {
        caps.spend.map(|c| {
            let (used, resets_at, exhausted) = shown(&c, now);
            SpendCapView {
                micros: c.limit,
                period: (c.period != Period::Lifetime).then_some("month"),
                used,
                resets_at,
                exhausted,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(body: &str) -> Result<Option<CapsChange>, ApiError> {
        let mut f = Fields::parse(body.as_bytes(), &["quota", "spend_cap"], false)?;
        CapsDraft::from_fields(&mut f)?.check(0)
    }

    fn field(body: &str) -> String {
        match read(body) {
            Err(ApiError::Invalid { field, .. }) => field,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_caps_name_their_field() {
        assert_eq!(field(r#"{"quota":{"requests":0}}"#), "quota.requests");
        assert_eq!(field(r#"{"quota":{}}"#), "quota.requests");
        assert_eq!(
            field(r#"{"quota":{"requests":5,"refill":"hourly"}}"#),
            "quota.refill"
        );
        assert_eq!(field(r#"{"quota":{"requests":5,"x":1}}"#), "quota.x");
        assert_eq!(field(r#"{"quota":5}"#), "quota");
        assert_eq!(field(r#"{"spend_cap":{"micros":-1}}"#), "spend_cap.micros");
        assert_eq!(
            field(r#"{"spend_cap":{"micros":1,"period":"day"}}"#),
            "spend_cap.period"
        );
        assert_eq!(
            field(r#"{"spend_cap":{"micros":9007199254740993}}"#),
            "spend_cap.micros"
        );
    }

    #[test]
    fn null_clears_and_absent_keeps() {
        assert_eq!(read("{}").ok(), Some(None));
        let cleared = read(r#"{"quota":null}"#).ok().flatten();
        assert_eq!(
            cleared.map(|c| (c.quota, c.spend)),
            Some((Some(None), None))
        );
        let set = read(r#"{"spend_cap":{"micros":7,"period":"month"}}"#)
            .ok()
            .flatten();
        assert_eq!(set.and_then(|c| c.spend), Some(Some((7, Period::Month))));
    }
}
