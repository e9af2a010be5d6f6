//! The audit log (SPEC §11): who did which management action, from where,
//! to what, changing which fields (never a secret), kept 400 days
//! (crate::maintenance); and `GET /api/v1/audit-log`, the tenant's entries
//! newest first, paginated like the key list (crate::listing) and filtered
//! by `key_id`, `external_id` and `action`.
//!
//! The source address is the client as the proxy in front saw it:
//! `x-envoy-external-address`, else the last `x-forwarded-for` entry (the
//! one Envoy appended; earlier ones are the client's own claims), else the
//! connection's peer.

use crate::auth::{self, authenticate};
use crate::body;
use crate::clock;
use crate::errors::{json, ApiError};
use crate::listing;
use crate::service::Service;
use crate::state::AppState;
use crate::store::events::{AuditEntry, AuditQuery};
use crate::store::KeyPatch;
use crate::views::KeyView;
use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use keygate::ids::{KeyId, OrgId};
use serde::Serialize;
use serde_json::{json, Map, Value};
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use utoipa::{IntoParams, ToSchema};

pub const KEY_CREATE: &str = "api_key.create";
pub const KEY_UPDATE: &str = "api_key.update";
pub const KEY_REVOKE: &str = "api_key.revoke";
pub const KEY_ROTATE: &str = "api_key.rotate";
pub const KEY_USAGE_RESET: &str = "api_key.usage_reset";
pub const PLAN_CHANGE: &str = "tenant.plan_change";
pub const SUSPEND: &str = "tenant.suspend";
pub const RESUME: &str = "tenant.resume";
pub const WEBHOOK_CREATE: &str = "webhook.create";
pub const WEBHOOK_DELETE: &str = "webhook.delete";
pub const SIGN_IN: &str = "dashboard.sign_in";
pub const SIGN_IN_FAILED: &str = "dashboard.sign_in_failed";
pub const DATA_PLANE_CREATE: &str = "data_plane.create";
pub const DATA_PLANE_ROTATE: &str = "data_plane.rotate";
pub const DATA_PLANE_REVOKE: &str = "data_plane.revoke";
/// A live key reported by secret scanning (crate::leaks::report).
pub const KEY_LEAKED: &str = "api_key.leaked";
/// The tenant's settings changed (crate::leaks::settings).
pub const SETTINGS_CHANGE: &str = "tenant.settings_change";
/// Every action an entry may have (the `action` filter takes these).
pub const ACTIONS: &[&str] = &[
    KEY_CREATE,
    KEY_UPDATE,
    KEY_REVOKE,
    KEY_ROTATE,
    KEY_USAGE_RESET,
    PLAN_CHANGE,
    SUSPEND,
    RESUME,
    WEBHOOK_CREATE,
    WEBHOOK_DELETE,
    SIGN_IN,
    SIGN_IN_FAILED,
    DATA_PLANE_CREATE,
    DATA_PLANE_ROTATE,
    DATA_PLANE_REVOKE,
    KEY_LEAKED,
    SETTINGS_CHANGE,
];
/// The actor of the operator API and of the admin CLI.
pub const OPERATOR: &str = "operator";
/// The source of the admin CLI's actions.
pub const CLI: &str = "cli";
/// The query parameters of the audit log (besides `api_key`).
const PARAMS: &[&str] = &["limit", "cursor", "key_id", "external_id", "action"];

/// The client's address of a request (see the module's doc).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source(pub String);

impl Source {
    /// The address of `headers`, else of `peer`, else `unknown`.
    pub fn of(headers: &HeaderMap, peer: Option<SocketAddr>) -> Source {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let external = header("x-envoy-external-address").and_then(address);
        let forwarded = || {
            header("x-forwarded-for")
                .and_then(|list| list.rsplit(',').next())
                .and_then(address)
        };
        let found = external.or_else(forwarded).or_else(|| peer.map(|p| p.ip()));
        Source(found.map_or_else(|| "unknown".into(), |ip| ip.to_string()))
    }
}

fn address(text: &str) -> Option<IpAddr> {
    text.trim().parse().ok()
}

impl<S: Send + Sync> FromRequestParts<S> for Source {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Source, Infallible> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0);
        Ok(Source::of(&parts.headers, peer))
    }
}

/// Who acted, and from where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Who {
    /// A key id, [`OPERATOR`], or `dashboard:<email>`.
    pub actor: String,
    pub source: String,
}

impl Who {
    /// A call with a tenant key.
    pub fn key(id: KeyId, source: Source) -> Who {
        Who {
            actor: id.to_string(),
            source: source.0,
        }
    }

    /// A call of the operator API.
    pub fn operator(source: Source) -> Who {
        Who {
            actor: OPERATOR.into(),
            source: source.0,
        }
    }

    /// An admin command.
    pub fn cli() -> Who {
        Who {
            actor: OPERATOR.into(),
            source: CLI.into(),
        }
    }

    /// A dashboard user.
    pub fn dashboard(email: &str, source: Source) -> Who {
        Who {
            actor: format!("dashboard:{email}"),
            source: source.0,
        }
    }
}

/// What was done to what: an entry before who and when.
#[derive(Debug, Clone, PartialEq)]
pub struct Note {
    pub action: &'static str,
    pub key_id: Option<KeyId>,
    pub external_id: Option<String>,
    pub webhook_id: Option<String>,
    pub changes: Value,
}

impl Note {
    /// An action on the tenant itself.
    pub fn tenant(action: &'static str, changes: Value) -> Note {
        Note {
            action,
            key_id: None,
            external_id: None,
            webhook_id: None,
            changes,
        }
    }

    /// An action on a key.
    pub fn key(action: &'static str, key: &KeyView, changes: Value) -> Note {
        Note {
            key_id: Some(key.id),
            external_id: key.external_id.clone(),
            ..Note::tenant(action, changes)
        }
    }

    /// An action on a webhook.
    pub fn webhook(action: &'static str, id: &str, changes: Value) -> Note {
        Note {
            webhook_id: Some(id.to_string()),
            ..Note::tenant(action, changes)
        }
    }
}

/// A tenant put on `plan`.
pub fn plan_changed(plan: &str) -> Note {
    Note::tenant(PLAN_CHANGE, json!({ "plan": plan }))
}

/// A tenant suspended (`true`) or resumed.
pub fn suspension(suspended: bool) -> Note {
    let action = if suspended { SUSPEND } else { RESUME };
    Note::tenant(action, json!({ "suspended": suspended }))
}

/// A key created.
pub fn creation(key: &KeyView) -> Note {
    Note::key(KEY_CREATE, key, created(key))
}

/// A key revoked.
pub fn revocation(key: &KeyView) -> Note {
    Note::key(KEY_REVOKE, key, json!({ "revoked_at": key.revoked_at }))
}

/// `old` rotated into `new`, keeping `grace` seconds.
pub fn rotation(old: &KeyView, new: &KeyView, grace: u64) -> Note {
    let changes = json!({"new_key_id": new.id, "grace_seconds": grace,
                         "expires_at": old.expires_at, "revoked_at": old.revoked_at});
    Note::key(KEY_ROTATE, old, changes)
}

/// The fields of a new key as recorded.
fn created(key: &KeyView) -> Value {
    const FIELDS: &[&str] = &[
        "name",
        "scopes",
        "environment",
        "rate_limit_tier",
        "expires_at",
        "rate_limits",
        "external_id",
        "metadata",
    ];
    picked(key, FIELDS.iter().copied())
}

/// The fields `patch` changed, with their new values as `key` now has them.
pub fn patched(patch: &KeyPatch, key: &KeyView) -> Value {
    let fields = [
        ("name", patch.name.is_some()),
        ("scopes", patch.scopes.is_some()),
        ("rate_limit_tier", patch.tier.is_some()),
        ("expires_at", patch.expires_at.is_some()),
        ("metadata", patch.metadata.is_some()),
        ("rate_limits", patch.limits.is_some()),
        ("external_id", patch.external_id.is_some()),
    ];
    picked(key, fields.iter().filter(|(_, set)| *set).map(|(f, _)| *f))
}

fn picked<'a>(key: &KeyView, fields: impl Iterator<Item = &'a str>) -> Value {
    let view = serde_json::to_value(key).unwrap_or_default();
    let out: Map<String, Value> = fields
        .map(|f| (f.to_string(), view.get(f).cloned().unwrap_or(Value::Null)))
        .collect();
    Value::Object(out)
}

impl Service {
    /// Records `note` by `who` in `org`'s audit log; a failure is logged,
    /// never the caller's (the action is done).
    pub async fn audit(&self, org: OrgId, who: &Who, note: Note) {
        let entry = AuditEntry {
            seq: 0,
            org,
            at: clock::now(),
            actor: who.actor.clone(),
            source: who.source.clone(),
            action: note.action.to_string(),
            key_id: note.key_id,
            external_id: note.external_id,
            webhook_id: note.webhook_id,
            changes: note.changes,
        };
        if let Err(e) = self.store().append_audit(entry).await {
            tracing::error!(error = %e, org_id = %org, action = note.action,
                            "cannot record an audit entry");
        }
    }

    /// Records a dashboard sign-in of `email` into `org` from `source`, or a
    /// failed one (the dashboard calls this; never with the password).
    pub async fn audit_sign_in(&self, org: OrgId, email: &str, source: Source, succeeded: bool) {
        let action = if succeeded { SIGN_IN } else { SIGN_IN_FAILED };
        let who = Who::dashboard(email, source);
        self.audit(org, &who, Note::tenant(action, json!({}))).await;
    }
}

/// The audit route.
pub fn routes() -> Router<AppState> {
    Router::new().route("/api/v1/audit-log", get(audit_log))
}

/// An audit query, as asked.
#[derive(Debug, Default, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditDraft {
    /// Entries in the page, 1 to 100 (default 50).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 100)]
    pub limit: Option<String>,
    /// The `next_cursor` of the page before.
    pub cursor: Option<String>,
    /// Only entries about this key.
    #[param(pattern = "^key_[0-9a-f]{16}$")]
    pub key_id: Option<String>,
    /// Only entries about keys of this end user.
    #[param(min_length = 1, max_length = 128)]
    pub external_id: Option<String>,
    /// Only entries of this action.
    #[param(value_type = Option<ActionName>)]
    pub action: Option<String>,
}

/// An audit action (a schema only, never built).
#[derive(ToSchema)]
#[allow(dead_code)]
pub enum ActionName {
    #[schema(rename = "api_key.create")]
    KeyCreate,
    #[schema(rename = "api_key.update")]
    KeyUpdate,
    #[schema(rename = "api_key.revoke")]
    KeyRevoke,
    #[schema(rename = "api_key.rotate")]
    KeyRotate,
    #[schema(rename = "tenant.plan_change")]
    PlanChange,
    #[schema(rename = "tenant.suspend")]
    Suspend,
    #[schema(rename = "tenant.resume")]
    Resume,
    #[schema(rename = "webhook.create")]
    WebhookCreate,
    #[schema(rename = "webhook.delete")]
    WebhookDelete,
    #[schema(rename = "dashboard.sign_in")]
    SignIn,
    #[schema(rename = "dashboard.sign_in_failed")]
    SignInFailed,
    #[schema(rename = "data_plane.create")]
    DataPlaneCreate,
    #[schema(rename = "data_plane.rotate")]
    DataPlaneRotate,
    #[schema(rename = "data_plane.revoke")]
    DataPlaneRevoke,
    #[schema(rename = "api_key.leaked")]
    KeyLeaked,
    #[schema(rename = "tenant.settings_change")]
    SettingsChange,
}

impl AuditDraft {
    fn from_query(query: Option<&str>) -> Result<AuditDraft, ApiError> {
        let mut params = body::query_params(query, PARAMS)?;
        Ok(AuditDraft {
            limit: params.remove("limit"),
            cursor: params.remove("cursor"),
            key_id: params.remove("key_id"),
            external_id: params.remove("external_id"),
            action: params.remove("action"),
        })
    }

    fn check(self) -> Result<AuditQuery, ApiError> {
        let key_id = self
            .key_id
            .map(|k| {
                k.parse().map_err(|_| {
                    ApiError::invalid(
                        "key_id",
                        "key_id must be a key id such as key_0123456789abcdef",
                    )
                })
            })
            .transpose()?;
        let action = self
            .action
            .map(|a| match ACTIONS.iter().find(|known| **known == a) {
                Some(_) => Ok(a),
                None => Err(ApiError::invalid(
                    "action",
                    format!("action must be one of {}", ACTIONS.join(", ")),
                )),
            })
            .transpose()?;
        Ok(AuditQuery {
            before: self.cursor.as_deref().map(listing::position).transpose()?,
            limit: self
                .limit
                .as_deref()
                .map_or(Ok(listing::DEFAULT_LIMIT), listing::limit)?,
            key_id,
            external_id: self
                .external_id
                .map(crate::drafts::external_id)
                .transpose()?,
            action,
        })
    }
}

/// What an entry is about.
#[derive(Debug, Serialize, ToSchema)]
pub struct TargetView {
    #[schema(value_type = Option<String>)]
    pub key_id: Option<KeyId>,
    pub external_id: Option<String>,
    pub webhook_id: Option<String>,
}

/// One audit entry.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = AuditEntry)]
pub struct AuditView {
    /// `aud_<sequence number>`.
    pub id: String,
    #[schema(format = DateTime)]
    pub time: String,
    /// A key id, `operator`, or `dashboard:<email>`.
    pub actor: String,
    /// The client's address as Envoy saw it (`cli` for the admin CLI).
    pub source: String,
    pub action: String,
    pub target: TargetView,
    /// The fields changed and their new values.
    #[schema(value_type = Object)]
    pub changes: Value,
}

/// A page of audit entries, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditList {
    pub data: Vec<AuditView>,
    pub next_cursor: Option<String>,
}

impl From<AuditEntry> for AuditView {
    fn from(e: AuditEntry) -> AuditView {
        AuditView {
            id: format!("aud_{}", e.seq),
            time: clock::rfc3339(e.at),
            actor: e.actor,
            source: e.source,
            action: e.action,
            target: TargetView {
                key_id: e.key_id,
                external_id: e.external_id,
                webhook_id: e.webhook_id,
            },
            changes: e.changes,
        }
    }
}

/// The tenant's audit log, newest first (`tenant:read` or `tenant:admin`).
#[utoipa::path(get, path = "/api/v1/audit-log", tag = "audit", params(AuditDraft),
    security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, description = "A page of audit entries", body = AuditList)))]
pub async fn audit_log(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, ApiError> {
    let caller = authenticate(&state.service, &headers, &uri, auth::READ).await?;
    let query = AuditDraft::from_query(uri.query())?.check()?;
    let page = state
        .service
        .store()
        .audit_page(caller.org_id, query)
        .await?;
    let list = AuditList {
        data: page.entries.into_iter().map(AuditView::from).collect(),
        next_cursor: page.next_before.map(listing::cursor),
    };
    Ok(json(StatusCode::OK, &list))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn the_source_is_envoys_view_of_the_client() {
        let peer: SocketAddr = "10.0.0.9:5555".parse().unwrap();
        let mut headers = HeaderMap::new();
        assert_eq!(Source::of(&headers, Some(peer)).0, "10.0.0.9");
        assert_eq!(Source::of(&headers, None).0, "unknown");
        headers.insert(
            "x-forwarded-for",
            HeaderValue::from_static("203.0.113.9, 198.51.100.7"),
        );
        assert_eq!(Source::of(&headers, Some(peer)).0, "198.51.100.7");
        headers.insert(
            "x-envoy-external-address",
            HeaderValue::from_static("192.0.2.1"),
        );
        assert_eq!(Source::of(&headers, Some(peer)).0, "192.0.2.1");
        headers.insert("x-envoy-external-address", HeaderValue::from_static("junk"));
        assert_eq!(Source::of(&headers, Some(peer)).0, "198.51.100.7");
    }

    #[test]
    fn bad_filters_are_named() {
        let field = |q: &str| match AuditDraft::from_query(Some(q)).and_then(AuditDraft::check) {
            Err(ApiError::Invalid { field, .. }) => field,
            other => panic!("{q}: {other:?}"),
        };
        assert_eq!(field("action=key.eat"), "action");
        assert_eq!(field("key_id=xyz"), "key_id");
        assert_eq!(field("limit=0"), "limit");
        assert_eq!(field("cursor=zz"), "cursor");
        assert_eq!(field("colour=red"), "colour");
        let ok = AuditDraft::from_query(Some("action=api_key.revoke&limit=5"))
            .and_then(AuditDraft::check)
            .unwrap();
        assert_eq!((ok.limit, ok.action.as_deref()), (5, Some(KEY_REVOKE)));
    }
}
