//! What a caller asks to create or change, before and after its checks. The
//! API reads drafts from JSON, the admin CLI from flags; both go through the
//! same checks, whose errors are 400s naming the field. The drafts are also
//! the request bodies of the OpenAPI document (crate::openapi).

use crate::body::{required, Fields};
use crate::caps::{CapsDraft, QuotaDraft, SpendCapDraft};
use crate::clock;
use crate::errors::ApiError;
use crate::password::Password;
use crate::policy::MintPolicy;
use crate::store::caps::Caps;
use crate::store::{KeyPatch, Metadata, MAX_METADATA_BYTES};
use keygate::feed::{is_valid_external_id, MAX_EXTERNAL_ID};
use keygate::key::Environment;
use keygate::limits::RateLimits;
use utoipa::ToSchema;

/// Longest name of a key or tenant, in characters.
pub const MAX_NAME: usize = 100;
/// Longest email address.
pub const MAX_EMAIL: usize = 254;
/// Longest grace period of a rotation: 30 days.
pub const MAX_GRACE_SECONDS: u64 = 30 * 24 * 3600;

/// A key to mint, as asked (`POST /api/v1/api-keys`).
#[derive(Debug, Default, Clone, ToSchema)]
#[schema(as = CreateKey)]
pub struct KeyDraft {
    /// 1 to 100 characters, no control characters.
    #[schema(required = true, value_type = String, min_length = 1, max_length = 100)]
    pub name: Option<String>,
    /// At least one of the allowed scopes (SPEC §5). Absent: the tenant's
    /// default key scopes, which are every allowed scope but `tenant:admin`
    /// unless the tenant's plan sets `default_key_scopes`. An empty list is
    /// a 400.
    #[schema(value_type = Option<Vec<String>>, min_items = 1)]
    pub scopes: Option<Vec<String>>,
    /// `live` (default) or `test`.
    #[schema(value_type = Option<crate::schemas::EnvironmentName>)]
    pub environment: Option<String>,
    /// RFC 3339, in the future.
    #[schema(format = DateTime)]
    pub expires_at: Option<String>,
    /// One of the configured tiers (default: the first).
    pub rate_limit_tier: Option<String>,
    /// The key's own limits, on top of its tier's buckets (within the plan).
    pub rate_limits: Option<LimitsDraft>,
    /// The end user or device the key is for (1 to 128 visible ASCII
    /// characters), forwarded upstream as `x-key-owner`.
    #[schema(min_length = 1, max_length = 128)]
    pub external_id: Option<String>,
    /// A JSON object of at most 1 KiB serialized; returned by the API,
    /// never sent upstream.
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Metadata>,
    /// A request quota: used up, the key is refused with 402.
    pub quota: Option<QuotaDraft>,
    /// A spending cap on the cost the upstream reports: used up, 402.
    pub spend_cap: Option<SpendCapDraft>,
}

/// A key's own rate limits, as asked (`rate_limits`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, ToSchema)]
#[schema(as = RateLimits)]
pub struct LimitsDraft {
    /// Requests per minute at each Envoy (absent: no limit of its own).
    #[schema(minimum = 1, maximum = 4294967295_u64)]
    pub per_minute: Option<u64>,
    /// Requests per day at each Envoy (absent: no limit of its own).
    #[schema(minimum = 1, maximum = 4294967295_u64)]
    pub per_day: Option<u64>,
}

impl LimitsDraft {
    /// Reads the `rate_limits` object of `f`, if present.
    pub fn from_fields(f: &mut Fields) -> Result<Option<LimitsDraft>, ApiError> {
        let Some(mut limits) = f.nested("rate_limits", &["per_minute", "per_day"])? else {
            return Ok(None);
        };
        Ok(Some(LimitsDraft {
            per_minute: limits.integer("per_minute")?,
            per_day: limits.integer("per_day")?,
        }))
    }

    /// Checks each limit: a positive integer that fits 32 bits.
    pub fn check(self) -> Result<RateLimits, ApiError> {
        Ok(RateLimits {
            per_minute: limit(self.per_minute, "rate_limits.per_minute")?,
            per_day: limit(self.per_day, "rate_limits.per_day")?,
        })
    }
}

/// A change of a key, as asked (`PATCH /api/v1/api-keys/{id}`): absent
/// fields stay as they are; `null` clears `expires_at` or `metadata`.
// A field is added here, in `PATCH_FIELDS`, and in `KeyPatchDraft::check`.
#[derive(Debug, Default, Clone, ToSchema)]
#[schema(as = PatchKey)]
pub struct KeyPatchDraft {
    #[schema(min_length = 1, max_length = 100, nullable = false)]
    pub name: Option<String>,
    #[schema(min_items = 1, nullable = false)]
    pub scopes: Option<Vec<String>>,
    /// One of the configured tiers.
    #[schema(nullable = false)]
    pub rate_limit_tier: Option<String>,
    /// RFC 3339 in the future, or `null`: never expires.
    #[schema(value_type = Option<String>, format = DateTime, nullable = true)]
    pub expires_at: Option<Option<String>>,
    /// Replaces the metadata; `null` clears it.
    #[schema(value_type = Option<Object>, nullable = true)]
    pub metadata: Option<Option<Metadata>>,
    /// Replaces the key's own limits (within the plan); `null` clears them.
    #[schema(value_type = Option<LimitsDraft>, nullable = true)]
    pub rate_limits: Option<Option<LimitsDraft>>,
    /// Replaces the owner; `null` clears it.
    #[schema(value_type = Option<String>, nullable = true, min_length = 1, max_length = 128)]
    pub external_id: Option<Option<String>>,
    /// Replaces the quota (the same refill keeps what was used); `null`
    /// removes it.
    #[schema(value_type = Option<QuotaDraft>, nullable = true)]
    pub quota: Option<Option<QuotaDraft>>,
    /// Replaces the spending cap (the same period keeps what was used);
    /// `null` removes it.
    #[schema(value_type = Option<SpendCapDraft>, nullable = true)]
    pub spend_cap: Option<Option<SpendCapDraft>>,
}

/// The fields a `PATCH` may name.
const PATCH_FIELDS: &[&str] = &[
    "name",
    "scopes",
    "rate_limit_tier",
    "expires_at",
    "metadata",
    "rate_limits",
    "external_id",
    "quota",
    "spend_cap",
];

/// A key to mint, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySpec {
    pub name: String,
    /// Space-separated, each allowed, no duplicates; `None`: the plan's
    /// default key scopes (crate::plans::Plan::default_key_scopes).
    pub scopes: Option<String>,
    pub environment: Environment,
    pub expires_at: Option<u64>,
    pub tier: String,
    /// Its own limits ([`RateLimits::NONE`]: the tier's only).
    pub limits: RateLimits,
    /// Its owner, forwarded as `x-key-owner`.
    pub external_id: Option<String>,
    pub metadata: Option<Metadata>,
    /// Its spending cap and quota, counts starting now.
    pub caps: Caps,
}

/// A tenant to create, as asked (`POST /api/v1/tenants`).
#[derive(Debug, Default, Clone, ToSchema)]
#[schema(as = CreateTenant)]
pub struct TenantDraft {
    #[schema(required = true, value_type = String, min_length = 1, max_length = 100)]
    pub name: Option<String>,
    #[schema(required = true, value_type = String, format = Email, max_length = 254)]
    pub email: Option<String>,
    /// The dashboard password (10 to 256 bytes; absent: none yet). Sign-in
    /// to `/dashboard` is by `email` and this password.
    #[schema(value_type = Option<String>, format = Password, min_length = 10, max_length = 256)]
    pub password: Option<Password>,
}

/// A tenant to create, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantSpec {
    pub name: String,
    pub email: String,
    pub password: Option<Password>,
}

impl KeyDraft {
    /// Reads `POST /api/v1/api-keys`.
    pub fn from_json(bytes: &[u8]) -> Result<KeyDraft, ApiError> {
        let known = [
            "name",
            "scopes",
            "environment",
            "expires_at",
            "rate_limit_tier",
            "rate_limits",
            "external_id",
            "metadata",
            "quota",
            "spend_cap",
        ];
        let mut f = Fields::parse(bytes, &known, false)?;
        let caps = CapsDraft::from_fields(&mut f)?;
        Ok(KeyDraft {
            name: f.string("name")?,
            scopes: f.strings("scopes")?,
            environment: f.string("environment")?,
            expires_at: f.string("expires_at")?,
            rate_limit_tier: f.string("rate_limit_tier")?,
            rate_limits: LimitsDraft::from_fields(&mut f)?,
            external_id: f.string("external_id")?,
            metadata: f.object("metadata")?,
            quota: caps.quota.flatten(),
            spend_cap: caps.spend_cap.flatten(),
        })
    }

    /// Checks every field against `policy` at time `now`.
    pub fn check(self, policy: &MintPolicy, now: u64) -> Result<KeySpec, ApiError> {
        Ok(KeySpec {
            name: name(required(self.name, "name")?, "name")?,
            scopes: self.scopes.map(|s| scopes(s, policy)).transpose()?,
            environment: environment(self.environment, policy)?,
            expires_at: self.expires_at.map(|at| expires_at(&at, now)).transpose()?,
            tier: self.rate_limit_tier.map_or_else(
                || Ok(policy.default_tier().to_string()),
                |t| tier(t, policy),
            )?,
            limits: self.rate_limits.unwrap_or_default().check()?,
            external_id: self.external_id.map(external_id).transpose()?,
            metadata: self.metadata.map(metadata).transpose()?,
            caps: CapsDraft {
                quota: self.quota.map(Some),
                spend_cap: self.spend_cap.map(Some),
            }
            .new_caps(now)?,
        })
    }
}

impl KeyPatchDraft {
    /// Reads `PATCH /api/v1/api-keys/{id}`.
    pub fn from_json(bytes: &[u8]) -> Result<KeyPatchDraft, ApiError> {
        let mut f = Fields::parse(bytes, PATCH_FIELDS, false)?;
        f.refuse_null(&["name", "scopes", "rate_limit_tier"])?;
        let caps = CapsDraft::from_fields(&mut f)?;
        Ok(KeyPatchDraft {
            name: f.string("name")?,
            scopes: f.strings("scopes")?,
            rate_limit_tier: f.string("rate_limit_tier")?,
            expires_at: f.clearable("expires_at", Fields::string)?,
            metadata: f.clearable("metadata", Fields::object)?,
            rate_limits: f.clearable("rate_limits", |f, _| LimitsDraft::from_fields(f))?,
            external_id: f.clearable("external_id", Fields::string)?,
            quota: caps.quota,
            spend_cap: caps.spend_cap,
        })
    }

    /// Checks every field against `policy` at time `now`, all before any
    /// write.
    pub fn check(self, policy: &MintPolicy, now: u64) -> Result<KeyPatch, ApiError> {
        Ok(KeyPatch {
            name: self.name.map(|n| name(n, "name")).transpose()?,
            scopes: self.scopes.map(|s| scopes(s, policy)).transpose()?,
            tier: self.rate_limit_tier.map(|t| tier(t, policy)).transpose()?,
            expires_at: self
                .expires_at
                .map(|at| at.map(|at| expires_at(&at, now)).transpose())
                .transpose()?,
            metadata: self
                .metadata
                .map(|m| m.map(metadata).transpose())
                .transpose()?,
            limits: self
                .rate_limits
                .map(|l| l.unwrap_or_default().check())
                .transpose()?,
            external_id: self
                .external_id
                .map(|e| e.map(external_id).transpose())
                .transpose()?,
            caps: CapsDraft {
                quota: self.quota,
                spend_cap: self.spend_cap,
            }
            .check(now)?,
        })
    }
}

impl TenantDraft {
    /// Reads `POST /api/v1/tenants`.
    pub fn from_json(bytes: &[u8]) -> Result<TenantDraft, ApiError> {
        let mut f = Fields::parse(bytes, &["name", "email", "password"], false)?;
        Ok(TenantDraft {
            name: f.string("name")?,
            email: f.string("email")?,
            password: f.string("password")?.map(Password::typed),
        })
    }

    /// Checks the name and (loosely) the email address.
    pub fn check(self) -> Result<TenantSpec, ApiError> {
        Ok(TenantSpec {
            name: name(required(self.name, "name")?, "name")?,
            email: email(required(self.email, "email")?)?,
            password: self.password.map(|p| p.check("password")).transpose()?,
        })
    }
}

/// Reads `POST /api/v1/api-keys/{id}/rotate`: the grace period in seconds.
pub fn grace_seconds(bytes: &[u8]) -> Result<u64, ApiError> {
    let grace = Fields::parse(bytes, &["grace_seconds"], true)?
        .integer("grace_seconds")?
        .unwrap_or(0);
    if grace > MAX_GRACE_SECONDS {
        return Err(ApiError::invalid(
            "grace_seconds",
            format!("grace_seconds must be at most {MAX_GRACE_SECONDS}"),
        ));
    }
    Ok(grace)
}

fn name(value: String, field: &str) -> Result<String, ApiError> {
    let value = value.trim();
    if value.is_empty() {
        return Err(ApiError::invalid(
            field,
            format!("{field} must not be empty"),
        ));
    }
    if value.chars().count() > MAX_NAME {
        return Err(ApiError::invalid(
            field,
            format!("{field} must be at most {MAX_NAME} characters"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            field,
            format!("{field} must not contain control characters"),
        ));
    }
    Ok(value.to_string())
}

fn email(value: String) -> Result<String, ApiError> {
    let value = value.trim();
    let well_formed = value.len() <= MAX_EMAIL
        && !value.chars().any(|c| c.is_whitespace() || c.is_control())
        && matches!(value.split_once('@'), Some((local, domain))
            if !local.is_empty() && !domain.is_empty() && !domain.contains('@'));
    if well_formed {
        Ok(value.to_string())
    } else {
        Err(ApiError::invalid(
            "email",
            format!("email must be an email address of at most {MAX_EMAIL} characters"),
        ))
    }
}

fn scopes(asked: Vec<String>, policy: &MintPolicy) -> Result<String, ApiError> {
    if asked.is_empty() {
        return Err(ApiError::invalid(
            "scopes",
            "scopes must name at least one scope",
        ));
    }
    let mut kept: Vec<&str> = Vec::with_capacity(asked.len());
    for scope in &asked {
        if !policy.scopes.contains(scope) {
            return Err(ApiError::invalid(
                "scopes",
                format!(
                    "scopes contains an unknown scope {scope:?}; allowed: {}",
                    policy.scopes.join(", ")
                ),
            ));
        }
        if !kept.contains(&scope.as_str()) {
            kept.push(scope);
        }
    }
    Ok(kept.join(" "))
}

/// `live` unless asked; `test` only where keys carry their environment.
fn environment(value: Option<String>, policy: &MintPolicy) -> Result<Environment, ApiError> {
    let env = value.map_or(Ok(Environment::Live), |v| {
        v.parse().map_err(|_| {
            ApiError::invalid("environment", "environment must be \"live\" or \"test\"")
        })
    })?;
    if !policy.key_format.allows(env) {
        return Err(ApiError::invalid(
            "environment",
            format!(
                "environment must be \"live\": keys in the {} format have no environment",
                policy.key_format
            ),
        ));
    }
    Ok(env)
}

fn expires_at(value: &str, now: u64) -> Result<u64, ApiError> {
    let secs = clock::parse_rfc3339(value).ok_or_else(|| {
        ApiError::invalid(
            "expires_at",
            "expires_at must be an RFC 3339 time such as 2030-01-01T00:00:00Z",
        )
    })?;
    let secs = u64::try_from(secs).unwrap_or(0);
    if secs <= now {
        return Err(ApiError::invalid(
            "expires_at",
            "expires_at must be in the future",
        ));
    }
    if secs > u64::from(u32::MAX) {
        return Err(ApiError::invalid(
            "expires_at",
            format!(
                "expires_at must be before {}",
                clock::rfc3339(u64::from(u32::MAX))
            ),
        ));
    }
    Ok(secs)
}

fn limit(value: Option<u64>, field: &str) -> Result<u32, ApiError> {
    let Some(value) = value else {
        return Ok(0);
    };
    u32::try_from(value).ok().filter(|v| *v > 0).ok_or_else(|| {
        ApiError::invalid(
            field,
            format!("{field} must be a positive integer of at most {}", u32::MAX),
        )
    })
}

/// Checks an `external_id`: 1 to 128 visible ASCII characters (a header value).
pub fn external_id(value: String) -> Result<String, ApiError> {
    if is_valid_external_id(&value) {
        Ok(value)
    } else {
        Err(ApiError::invalid(
            "external_id",
            format!(
                "external_id must be 1 to {MAX_EXTERNAL_ID} visible ASCII characters (no spaces)"
            ),
        ))
    }
}
/// A configured tier (whether the tenant's plan allows it is the service's
/// check).
fn tier(value: String, policy: &MintPolicy) -> Result<String, ApiError> {
    match value {
        t if policy.tiers.contains(&t) => Ok(t),
        _ => Err(ApiError::invalid(
            "rate_limit_tier",
            format!(
                "rate_limit_tier must be one of: {}",
                policy.tiers.join(", ")
            ),
        )),
    }
}

fn metadata(value: Metadata) -> Result<Metadata, ApiError> {
    let size = serde_json::to_string(&value).map_or(usize::MAX, |s| s.len());
    if size > MAX_METADATA_BYTES {
        return Err(ApiError::invalid(
            "metadata",
            format!("metadata must be at most {MAX_METADATA_BYTES} bytes as JSON, not {size}"),
        ));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> MintPolicy {
        MintPolicy::example()
    }

    fn field(result: Result<KeySpec, ApiError>) -> String {
        match result {
            Err(ApiError::Invalid { field, .. }) => field,
            other => panic!("{other:?}"),
        }
    }

    fn draft(scopes: &[&str]) -> KeyDraft {
        KeyDraft {
            name: Some(" k ".into()),
            scopes: Some(scopes.iter().map(|s| s.to_string()).collect()),
            ..KeyDraft::default()
        }
    }

    #[test]
    fn defaults_and_dedup() {
        let spec = draft(&["a:write", "a:read", "a:write"])
            .check(&policy(), 100)
            .unwrap();
        assert_eq!(spec.name, "k");
        assert_eq!(spec.scopes.as_deref(), Some("a:write a:read"));
        assert_eq!(spec.environment, Environment::Live);
        assert_eq!(spec.tier, "free");
        assert_eq!(spec.expires_at, None);
        let unscoped = KeyDraft {
            scopes: None,
            ..draft(&[])
        };
        let spec = unscoped.check(&policy(), 100).unwrap();
        assert_eq!(spec.scopes, None, "the plan's default key scopes");
    }

    #[test]
    fn prefix_secret_keys_are_all_live() {
        let p = policy().with_key_format(keygate::key::KeyFormat::PrefixSecret);
        let asking = |env: &str| KeyDraft {
            environment: Some(env.into()),
            ..draft(&["a:read"])
        };
        assert_eq!(field(asking("test").check(&p, 100)), "environment");
        let spec = asking("live").check(&p, 100).unwrap();
        assert_eq!(spec.environment, Environment::Live);
        assert_eq!(
            draft(&["a:read"]).check(&p, 100).unwrap().environment,
            Environment::Live
        );
    }

    #[test]
    fn every_bad_field_is_named() {
        let p = policy();
        let now = 1_900_000_000;
        assert_eq!(field(draft(&["b:read"]).check(&p, now)), "scopes");
        assert_eq!(field(draft(&[]).check(&p, now)), "scopes");
        let long = KeyDraft {
            name: Some("x".repeat(101)),
            ..draft(&["a:read"])
        };
        assert_eq!(field(long.check(&p, now)), "name");
        let blank = KeyDraft {
            name: Some("  ".into()),
            ..draft(&["a:read"])
        };
        assert_eq!(field(blank.check(&p, now)), "name");
        let env = KeyDraft {
            environment: Some("prod".into()),
            ..draft(&["a:read"])
        };
        assert_eq!(field(env.check(&p, now)), "environment");
        let tier = KeyDraft {
            rate_limit_tier: Some("gold".into()),
            ..draft(&["a:read"])
        };
        assert_eq!(field(tier.check(&p, now)), "rate_limit_tier");
        for at in ["2020-01-01T00:00:00Z", "tomorrow", "2200-01-01T00:00:00Z"] {
            let d = KeyDraft {
                expires_at: Some(at.into()),
                ..draft(&["a:read"])
            };
            assert_eq!(field(d.check(&p, now)), "expires_at", "{at}");
        }
        for (per_minute, per_day, named) in [
            (Some(0), None, "rate_limits.per_minute"),
            (None, Some(0), "rate_limits.per_day"),
            (Some(1 << 32), None, "rate_limits.per_minute"),
        ] {
            let d = KeyDraft {
                rate_limits: Some(LimitsDraft {
                    per_minute,
                    per_day,
                }),
                ..draft(&["a:read"])
            };
            assert_eq!(field(d.check(&p, now)), named);
        }
        for bad in ["", "a b", "é", &"x".repeat(129)] {
            let d = KeyDraft {
                external_id: Some(bad.into()),
                ..draft(&["a:read"])
            };
            assert_eq!(field(d.check(&p, now)), "external_id", "{bad:?}");
        }
        let limited = KeyDraft {
            rate_limits: Some(LimitsDraft {
                per_minute: Some(60),
                per_day: None,
            }),
            external_id: Some("user-1".into()),
            ..draft(&["a:read"])
        }
        .check(&p, now)
        .unwrap();
        assert_eq!((limited.limits.per_minute, limited.limits.per_day), (60, 0));
        assert_eq!(limited.external_id.as_deref(), Some("user-1"));
        let ok = KeyDraft {
            expires_at: Some("2031-01-01T00:00:00Z".into()),
            ..draft(&["a:read"])
        };
        assert_eq!(ok.check(&p, now).unwrap().expires_at, Some(1_924_992_000));
    }

    #[test]
    fn tenants_and_grace() {
        let t = |name: &str, email: &str| {
            TenantDraft {
                name: Some(name.into()),
                email: Some(email.into()),
                password: None,
            }
            .check()
        };
        assert!(t("Acme", "ops@acme.test").is_ok());
        for bad in ["", "no-at", "a@b@c", "@acme", "ops@", "o ps@acme"] {
            assert!(t("Acme", bad).is_err(), "{bad}");
        }
        assert!(t("", "ops@acme.test").is_err());
        assert_eq!(grace_seconds(b"").unwrap(), 0);
        assert_eq!(grace_seconds(br#"{"grace_seconds":60}"#).unwrap(), 60);
        assert!(grace_seconds(br#"{"grace_seconds":-1}"#).is_err());
        assert!(grace_seconds(br#"{"grace_seconds":99999999}"#).is_err());
    }
}
