//! `POST /api/v1/secret-scanning` (SPEC §17): a report in the format of
//! GitHub's secret scanning partner program — a JSON array of
//! `{"token","type","url","source"}`, signed with ECDSA P-256 (SHA-256)
//! over the raw body, the DER signature in base64 in
//! `Github-Public-Key-Signature`, the public key named by
//! `Github-Public-Key-Identifier` (configured with
//! `serve --secret-scanning-key ID=PEM-FILE`).
//!
//! A stranger's cost is bounded: the headers are checked first (a missing
//! or unknown key id, an unreadable signature: 401 before the body is
//! read), then the body (at most [`MAX_REPORT_BYTES`]) is verified, and
//! only a verified body is parsed (at most [`MAX_TOKENS`] tokens, each
//! checked for the key format and hashed once).
//!
//! The answer labels each token `true_positive` (a well-formed key whose
//! SHA-256 the store knows, live, revoked or expired) or `false_positive`,
//! never naming a tenant or a key. A live key follows its tenant's leak
//! policy: revoked (through [`Service::revoke`], delivered to every Envoy
//! before the answer) or left; either way an audit entry (actor
//! [`ACTOR`]) and a `key.leaked` event say where it was found.

use crate::audit::{self, Note, Source, Who};
use crate::clock;
use crate::errors::{json, ApiError, ErrorBody};
use crate::service::Service;
use crate::state::AppState;
use crate::store::leaks::LeakPolicy;
use crate::store::KeyRecord;
use crate::views::KeyView;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use base64::Engine;
use keygate::key;
use p256::ecdsa::signature::Verifier;
use p256::ecdsa::{DerSignature, VerifyingKey};
use p256::pkcs8::DecodePublicKey;
use serde::Serialize;
use serde_json::{json as value, Value};
use std::collections::HashSet;
use std::fmt;
use utoipa::ToSchema;

/// The route.
pub const PATH: &str = "/api/v1/secret-scanning";
/// Largest report body.
pub const MAX_REPORT_BYTES: usize = 1024 * 1024;
/// Most tokens in one report.
pub const MAX_TOKENS: usize = 1000;
/// The audit actor of what a report does.
pub const ACTOR: &str = "secret-scanning";
const SIGNATURE_HEADER: &str = "github-public-key-signature";
const KEY_ID_HEADER: &str = "github-public-key-identifier";
const UNSIGNED: &str = "Missing or invalid secret scanning signature";
const TRUE_POSITIVE: &str = "true_positive";
const FALSE_POSITIVE: &str = "false_positive";

/// The public keys reports may be signed with, by identifier.
#[derive(Clone, Default)]
pub struct ScanningKeys(Vec<(String, VerifyingKey)>);

impl fmt::Debug for ScanningKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(id, _)| id))
            .finish()
    }
}

impl ScanningKeys {
    /// The keys of `ID=PEM-FILE` specs (PEM SPKI public keys, P-256).
    pub fn load(specs: &[String]) -> Result<ScanningKeys, String> {
        let mut keys = Vec::with_capacity(specs.len());
        for spec in specs {
            let Some((id, file)) = spec.split_once('=').filter(|(id, _)| !id.is_empty()) else {
                return Err(format!(
                    "--secret-scanning-key takes ID=PEM-FILE, not {spec}"
                ));
            };
            let pem = std::fs::read_to_string(file)
                .map_err(|e| format!("cannot read secret scanning key {file}: {e}"))?;
            let key = VerifyingKey::from_public_key_pem(&pem)
                .map_err(|e| format!("{file} is not a PEM P-256 public key (SPKI): {e}"))?;
            keys.push((id.to_string(), key));
        }
        Ok(ScanningKeys(keys))
    }

    /// The key and signature the headers name; 401 unless both are there
    /// and readable.
    fn signer(&self, headers: &HeaderMap) -> Result<(&VerifyingKey, DerSignature), ApiError> {
        let unsigned = || ApiError::Unauthorized(UNSIGNED);
        let header = |name| headers.get(name).and_then(|v| v.to_str().ok());
        let id = header(KEY_ID_HEADER).ok_or_else(unsigned)?;
        let key = self
            .0
            .iter()
            .find(|(known, _)| known == id)
            .map(|(_, key)| key)
            .ok_or_else(unsigned)?;
        let der = base64::engine::general_purpose::STANDARD
            .decode(header(SIGNATURE_HEADER).ok_or_else(unsigned)?.trim())
            .map_err(|_| unsigned())?;
        let signature = DerSignature::from_bytes(&der).map_err(|_| unsigned())?;
        Ok((key, signature))
    }
}

/// One reported token (GitHub's format).
#[derive(ToSchema)]
#[allow(dead_code)]
struct ReportedToken {
    /// The string found.
    token: String,
    /// The secret type GitHub matched.
    r#type: String,
    /// Where it was found.
    url: Option<String>,
    /// What kind of place it was found in (`content`, `commit`, …).
    source: Option<String>,
}

/// A token of a report, as read.
struct Reported {
    token: String,
    kind: String,
    url: Option<String>,
    source: Option<String>,
}

/// The answer for one token (GitHub's format).
#[derive(Serialize, ToSchema)]
pub struct TokenLabel {
    /// The token, as reported.
    token_raw: String,
    /// Its type, as reported.
    token_type: String,
    /// `true_positive` for a key keygate issued, else `false_positive`.
    #[schema(pattern = "^(true|false)_positive$")]
    label: &'static str,
}

/// The route (its own body limit).
pub fn routes() -> Router<AppState> {
    Router::new().route(
        PATH,
        post(report).layer(DefaultBodyLimit::max(MAX_REPORT_BYTES)),
    )
}

/// Takes a secret scanning report (GitHub's partner format, signed): labels
/// each token; a live key is revoked, or left, as its tenant's leak policy
/// says, with an audit entry and a `key.leaked` event.
#[utoipa::path(post, path = "/api/v1/secret-scanning", tag = "secret-scanning",
    request_body(content = Vec<ReportedToken>, description = "At most 1000 tokens, at most 1 MiB"),
    params(
        ("Github-Public-Key-Identifier" = String, Header, description = "The configured public key the report is signed with"),
        ("Github-Public-Key-Signature" = String, Header, description = "Base64 of the DER ECDSA P-256 (SHA-256) signature of the raw body"),
    ),
    responses((status = 200, description = "Each token labelled, in order", body = Vec<TokenLabel>),
              (status = 400, description = "Not the partner format: `error.field` names the token", body = ErrorBody),
              (status = 401, description = "Missing or invalid signature, or unknown key identifier", body = ErrorBody),
              (status = 413, description = "The body is over 1 MiB", body = ErrorBody)))]
async fn report(
    State(state): State<AppState>,
    source: Source,
    request: Request,
) -> Result<Response, ApiError> {
    let keys = &state.service.leak_watch().keys;
    let (key, signature) = keys.signer(request.headers())?;
    let key = *key;
    let body = Bytes::from_request(request, &())
        .await
        .map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::TooLarge(MAX_REPORT_BYTES)
            } else {
                ApiError::invalid("body", "body could not be read")
            }
        })?;
    key.verify(&body, &signature)
        .map_err(|_| ApiError::Unauthorized(UNSIGNED))?;
    let tokens = parse(&body)?;
    let who = Who {
        actor: ACTOR.into(),
        source: source.0,
    };
    let mut handled = HashSet::new();
    let mut labels = Vec::with_capacity(tokens.len());
    for token in tokens {
        let known = state.service.leaked(&token, &who, &mut handled).await?;
        labels.push(TokenLabel {
            label: if known { TRUE_POSITIVE } else { FALSE_POSITIVE },
            token_raw: token.token,
            token_type: token.kind,
        });
    }
    Ok(json(StatusCode::OK, &labels))
}

/// The tokens of a verified body; 400 naming the token otherwise.
fn parse(body: &[u8]) -> Result<Vec<Reported>, ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::invalid("body", format!("body is not valid JSON: {e}")))?;
    let Value::Array(items) = value else {
        return Err(ApiError::invalid(
            "body",
            "body must be a JSON array of {token, type, url, source}",
        ));
    };
    if items.len() > MAX_TOKENS {
        return Err(ApiError::invalid(
            "body",
            format!("a report holds at most {MAX_TOKENS} tokens"),
        ));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, item)| reported(item, &format!("[{i}]")))
        .collect()
}

fn reported(item: &Value, at: &str) -> Result<Reported, ApiError> {
    let Value::Object(fields) = item else {
        let message = format!("{at} must be an object {{token, type, url, source}}");
        return Err(ApiError::invalid(at, message));
    };
    let text = |name: &str| -> Result<Option<String>, ApiError> {
        match fields.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => {
                let named = format!("{at}.{name}");
                Err(ApiError::invalid(
                    &named,
                    format!("{named} must be a string"),
                ))
            }
        }
    };
    let required = |name: &str| {
        let named = format!("{at}.{name}");
        text(name)?.ok_or_else(|| ApiError::invalid(&named, format!("{named} is required")))
    };
    Ok(Reported {
        token: required("token")?,
        kind: required("type")?,
        url: text("url")?,
        source: text("source")?,
    })
}

impl Service {
    /// Whether `token` is a key this store knows; a live one is handled
    /// (once per report: `handled` holds the hashes done) by its tenant's
    /// leak policy.
    async fn leaked(
        &self,
        token: &Reported,
        who: &Who,
        handled: &mut HashSet<[u8; 32]>,
    ) -> Result<bool, ApiError> {
        let policy = self.policy();
        if policy
            .key_format
            .parse(&token.token, &policy.key_prefix)
            .is_err()
        {
            return Ok(false);
        }
        let hash = key::hash(&token.token);
        let Some(record) = self.store().key_by_hash(hash).await? else {
            return Ok(false);
        };
        if record.is_active(clock::now()) && handled.insert(hash) {
            self.follow_leak_policy(record, token, who).await?;
        }
        Ok(true)
    }

    /// Revokes (policy `revoke`) or leaves a live leaked key; records and
    /// tells where it was found.
    async fn follow_leak_policy(
        &self,
        record: KeyRecord,
        token: &Reported,
        who: &Who,
    ) -> Result<(), ApiError> {
        let org = record.org_id;
        let policy = self.store().leak_policy(org).await?.unwrap_or_default();
        let key = match policy {
            LeakPolicy::Revoke => {
                let revoked = self.revoke(org, record.id).await?.value;
                self.audit(org, who, audit::revocation(&revoked)).await;
                revoked
            }
            LeakPolicy::Notify => KeyView::from(&record),
        };
        let revoked = policy == LeakPolicy::Revoke;
        tracing::warn!(org_id = %org, key_id = %key.id, revoked, "a key was reported leaked");
        let found = value!({"url": token.url, "source": token.source, "revoked": revoked});
        self.audit(org, who, Note::key(audit::KEY_LEAKED, &key, found.clone()))
            .await;
        self.emit_key_leaked(org, &key, found).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_partner_format_is_read() {
        let good =
            br#"[{"token":"t","type":"keygate_api_key","url":"https://x","source":"content"},
                        {"token":"u","type":"k"}]"#;
        let tokens = parse(good).unwrap();
        assert_eq!(tokens.len(), 2);
        assert_eq!(tokens[0].url.as_deref(), Some("https://x"));
        assert_eq!(tokens[1].source, None);
        let field = |body: &[u8]| match parse(body) {
            Err(ApiError::Invalid { field, .. }) => field,
            other => panic!("{:?}", other.map(|t| t.len())),
        };
        assert_eq!(field(b"{}"), "body");
        assert_eq!(field(b"not json"), "body");
        assert_eq!(field(br#"[{"token":"t","type":"k"}, 3]"#), "[1]");
        assert_eq!(field(br#"[{"type":"k"}]"#), "[0].token");
        assert_eq!(field(br#"[{"token":"t","type":"k","url":7}]"#), "[0].url");
        let many = format!("[{}]", vec![r#"{"token":"t","type":"k"}"#; 1001].join(","));
        assert_eq!(field(many.as_bytes()), "body");
    }
}
