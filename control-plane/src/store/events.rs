//! What the store keeps of webhooks, their delivery queue and the audit log
//! (SPEC §11), and the [`EventStore`] operations on them, which both
//! backends implement (a supertrait of [`super::Store`]).

use super::StoreFuture;
use keygate::ids::{KeyId, OrgId};

/// Audit entries are kept this long (seconds).
pub const AUDIT_RETENTION: u64 = 400 * 86_400;
/// Finished deliveries are listed this long (seconds).
pub const DELIVERY_RETENTION: u64 = 30 * 86_400;

/// A tenant's webhook, with the secret its deliveries are signed with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    /// `wh_<16 hex>`.
    pub id: String,
    pub org: OrgId,
    pub url: String,
    /// The event types it receives.
    pub events: Vec<String>,
    pub secret: String,
    /// Unix seconds.
    pub created_at: u64,
}

/// An event to deliver to every webhook of its tenant that takes its type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// `evt_<16 hex>`.
    pub id: String,
    pub org: OrgId,
    pub kind: String,
    /// Unix seconds.
    pub created_at: u64,
    /// The JSON body every delivery sends.
    pub payload: String,
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryStatus {
    Pending,
    Delivered,
    /// Retried until the retry window closed.
    Failed,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Failed => "failed",
        }
    }

    /// The status stored as `text` (an unknown one reads as pending).
    pub fn parse(text: &str) -> DeliveryStatus {
        match text {
            "delivered" => DeliveryStatus::Delivered,
            "failed" => DeliveryStatus::Failed,
            _ => DeliveryStatus::Pending,
        }
    }
}

/// One delivery of one event to one webhook, as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// `dlv_<16 hex>`.
    pub id: String,
    pub webhook_id: String,
    pub event_id: String,
    pub event_type: String,
    pub status: DeliveryStatus,
    pub attempts: u64,
    /// The HTTP status of the last attempt, if one answered.
    pub last_status: Option<u16>,
    /// Why the last attempt failed, if it did.
    pub last_error: Option<String>,
    pub created_at: u64,
    /// When a pending delivery is tried next.
    pub next_attempt_at: Option<u64>,
    /// When it was delivered or given up.
    pub finished_at: Option<u64>,
}

/// A delivery the worker claimed: what it sends, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueDelivery {
    pub id: String,
    pub org: OrgId,
    pub url: String,
    pub secret: String,
    pub event_id: String,
    pub event_type: String,
    pub payload: String,
    /// Attempts before this one.
    pub attempts: u64,
    pub created_at: u64,
}

/// Which due deliveries to claim: the oldest due first, at most
/// `per_tenant` of one tenant and none of the tenants in `skip` (those
/// whose sends are at their bound), so one tenant's backlog never fills a
/// claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// Unix seconds: deliveries due by then.
    pub now: u64,
    /// Each claimed one is not due again before this unless its attempt is recorded.
    pub lease_until: u64,
    pub limit: usize,
    pub per_tenant: usize,
    pub skip: Vec<OrgId>,
}

/// The outcome of one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// The HTTP status, if the receiver answered.
    pub status: Option<u16>,
    /// Why it failed (`None`: delivered).
    pub error: Option<String>,
    /// When it ended (unix seconds).
    pub at: u64,
    /// A failed attempt: when to try again (`None`: give up).
    pub retry_at: Option<u64>,
}

/// A key whose expiry is near, claimed for a `key.expiring` event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpiringKey {
    pub org: OrgId,
    pub key_id: KeyId,
    pub name: String,
    pub display_prefix: String,
    pub external_id: Option<String>,
    pub expires_at: u64,
}

/// One audit entry (never a secret).
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEntry {
    /// Its sequence number (0 before it is stored).
    pub seq: u64,
    pub org: OrgId,
    /// Unix seconds.
    pub at: u64,
    /// A key id, `operator`, or `dashboard:<email>`.
    pub actor: String,
    /// The client's address as Envoy saw it (or `cli`).
    pub source: String,
    pub action: String,
    pub key_id: Option<KeyId>,
    pub external_id: Option<String>,
    pub webhook_id: Option<String>,
    /// The fields changed and their new values (a JSON object).
    pub changes: serde_json::Value,
}

/// One page of a tenant's audit log, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditQuery {
    /// Only entries before this sequence number (from a cursor).
    pub before: Option<u64>,
    /// Most entries (at least 1).
    pub limit: usize,
    pub key_id: Option<KeyId>,
    pub external_id: Option<String>,
    pub action: Option<String>,
}

/// A page of entries, and the sequence number the next page starts before.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditPage {
    pub entries: Vec<AuditEntry>,
    pub next_before: Option<u64>,
}

impl AuditPage {
    /// The page of `query` from entries read with one more than its limit.
    pub fn of(query: &AuditQuery, mut entries: Vec<AuditEntry>) -> AuditPage {
        let limit = query.limit.max(1);
        let more = entries.len() > limit;
        entries.truncate(limit);
        AuditPage {
            next_before: entries.last().map(|e| e.seq).filter(|_| more),
            entries,
        }
    }
}

/// Webhooks, their deliveries and the audit log.
pub trait EventStore {
    /// Stores a webhook of an existing tenant.
    fn create_webhook(&self, hook: Webhook) -> StoreFuture<'_, ()>;

    /// A tenant's webhooks, oldest first.
    fn webhooks(&self, org: OrgId) -> StoreFuture<'_, Vec<Webhook>>;

    /// Deletes a webhook and its deliveries; false if the tenant has none such.
    fn delete_webhook(&self, org: OrgId, id: String) -> StoreFuture<'_, bool>;

    /// Queues one pending delivery of `event` per webhook of its tenant
    /// taking its type, due at once; returns how many.
    fn enqueue(&self, event: Event) -> StoreFuture<'_, usize>;

    /// Claims pending deliveries as `claim` says.
    fn claim_due(&self, claim: Claim) -> StoreFuture<'_, Vec<DueDelivery>>;

    /// Records an attempt of a claimed delivery.
    fn record_attempt(&self, id: String, attempt: Attempt) -> StoreFuture<'_, ()>;

    /// The latest `limit` deliveries of a webhook of `org`, newest first;
    /// `None` if the tenant has no such webhook.
    fn deliveries(
        &self,
        org: OrgId,
        webhook: String,
        limit: usize,
    ) -> StoreFuture<'_, Option<Vec<Delivery>>>;

    /// Claims the active keys expiring in `(now, until]` not yet claimed for
    /// their current expiry.
    fn claim_expiring(&self, now: u64, until: u64) -> StoreFuture<'_, Vec<ExpiringKey>>;

    /// Appends an audit entry.
    fn append_audit(&self, entry: AuditEntry) -> StoreFuture<'_, ()>;

    /// A page of a tenant's audit log.
    fn audit_page(&self, org: OrgId, query: AuditQuery) -> StoreFuture<'_, AuditPage>;

    /// Drops audit entries and finished deliveries past their retention at
    /// `now`; returns how many rows went.
    fn prune_events(&self, now: u64) -> StoreFuture<'_, usize>;
}

/// The event types stored as one text column.
pub fn events_text(events: &[String]) -> String {
    events.join(" ")
}

/// The event types of the stored column.
pub fn events_of(text: &str) -> Vec<String> {
    text.split_whitespace().map(str::to_string).collect()
}
