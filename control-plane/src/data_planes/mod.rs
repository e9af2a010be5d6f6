//! Data planes (SPEC §15): the feed tokens of each Envoy fleet, and what
//! each may read and report. This module owns the in-memory registry of the
//! tokens valid now (refreshed from the store every [`REFRESH`], at once
//! after a local change), the feed's question "whose token is this", and
//! the wake-up of a held long-poll whose token stops being valid; the
//! operator routes are in [`api`].
//!
//! A token is kept as its SHA-256 only. After a rotation the previous token
//! stays valid until the overlap ends; a revoked plane's tokens are refused.
//! The `--feed-token` of `serve` is the unrestricted single-plane shortcut
//! ([`Access::Shared`]).

pub mod api;
pub mod view;

use crate::clock;
use crate::delivery::Delivery;
use crate::store::data_planes::DataPlane;
use crate::store::{Store, StoreError};
use keygate::ids::OrgId;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How often the registry re-reads the store (other replicas' changes, the
/// end of a rotation's overlap).
pub const REFRESH: Duration = Duration::from_millis(250);
/// The prefix of every data-plane token.
pub const TOKEN_PREFIX: &str = "kgdp_";

/// What a feed token may read and report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// The `--feed-token`: every key.
    Shared,
    /// A registered data plane, limited to `tenants` when set.
    Plane {
        id: u64,
        tenants: Option<Arc<BTreeSet<OrgId>>>,
    },
}

impl Access {
    /// The data plane, if the token is one's.
    pub fn plane(&self) -> Option<u64> {
        match self {
            Access::Shared => None,
            Access::Plane { id, .. } => Some(*id),
        }
    }

    /// The tenants whose keys it may see (`None`: all).
    pub fn tenants(&self) -> Option<&BTreeSet<OrgId>> {
        match self {
            Access::Plane {
                tenants: Some(t), ..
            } => Some(t),
            _ => None,
        }
    }

    /// Whether it may see the keys of `org`.
    pub fn sees(&self, org: OrgId) -> bool {
        self.tenants().is_none_or(|t| t.contains(&org))
    }
}

/// A token valid now.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Live {
    digest: [u8; 32],
    access: Access,
}

/// The tokens of `planes` valid at `now`.
fn live(planes: &[DataPlane], now: u64) -> Vec<Live> {
    let mut out = Vec::new();
    for plane in planes.iter().filter(|p| p.revoked_at.is_none()) {
        let access = Access::Plane {
            id: plane.id,
            tenants: plane
                .tenants
                .as_ref()
                .map(|t| Arc::new(t.iter().copied().collect())),
        };
        let old = plane.old_token.filter(|(_, until)| *until > now);
        for digest in std::iter::once(plane.token_hash).chain(old.map(|(d, _)| d)) {
            out.push(Live {
                digest,
                access: access.clone(),
            });
        }
    }
    out
}

/// The data-plane tokens valid now.
pub struct Registry {
    live: watch::Sender<Arc<Vec<Live>>>,
    delivery: Arc<Delivery>,
    /// One reload at a time: a read that began before a change never
    /// replaces what a read after it found.
    reloading: tokio::sync::Mutex<()>,
}

impl Registry {
    /// An empty registry; a plane that stops being valid leaves `delivery`.
    pub fn new(delivery: Arc<Delivery>) -> Registry {
        Registry {
            live: watch::channel(Arc::new(Vec::new())).0,
            delivery,
            reloading: tokio::sync::Mutex::new(()),
        }
    }

    /// Loads the planes now and then every [`REFRESH`] (a failed read keeps
    /// the tokens as they were and is logged).
    pub fn spawn(self: &Arc<Self>, store: Arc<dyn Store>) {
        let registry = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                if let Err(e) = registry.reload(store.as_ref()).await {
                    tracing::warn!(error = %e, "cannot read the data planes");
                }
                tokio::time::sleep(REFRESH).await;
            }
        });
    }

    /// Reads the planes from `store` and takes their tokens valid now.
    pub async fn reload(&self, store: &dyn Store) -> Result<(), StoreError> {
        let _one = self.reloading.lock().await;
        let planes = store.data_planes().await?;
        let now_live = live(&planes, clock::now());
        let changed = self.live.send_if_modified(|held| {
            let differs = **held != now_live;
            if differs {
                *held = Arc::new(now_live);
            }
            differs
        });
        if changed {
            let held = self.live.borrow().clone();
            self.delivery
                .keep_planes(|id| held.iter().any(|l| l.access.plane() == Some(id)));
        }
        Ok(())
    }

    /// What the token of SHA-256 `digest` may do, if it is valid now.
    pub fn access(&self, digest: &[u8; 32]) -> Option<Access> {
        let live = self.live.borrow();
        live.iter()
            .find(|l| l.digest == *digest)
            .map(|l| l.access.clone())
    }

    /// Resolves once the token of `digest` is no longer valid.
    pub async fn refused(&self, digest: [u8; 32]) {
        let mut live = self.live.subscribe();
        loop {
            if !live.borrow_and_update().iter().any(|l| l.digest == digest) {
                return;
            }
            if live.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plane(id: u64, tenants: Option<Vec<OrgId>>) -> DataPlane {
        DataPlane {
            id,
            name: format!("p{id}"),
            tenants,
            token_hash: [id as u8; 32],
            old_token: None,
            created_at: 1,
            rotated_at: None,
            revoked_at: None,
        }
    }

    #[test]
    fn old_tokens_live_through_the_overlap_and_revoked_planes_not_at_all() {
        let mut rotated = plane(1, Some(vec![OrgId(7)]));
        rotated.old_token = Some(([9; 32], 100));
        let mut revoked = plane(2, None);
        revoked.revoked_at = Some(50);
        let planes = [rotated, revoked];
        let digests =
            |now| -> Vec<[u8; 32]> { live(&planes, now).iter().map(|l| l.digest).collect() };
        assert_eq!(digests(99), vec![[1; 32], [9; 32]]);
        assert_eq!(digests(100), vec![[1; 32]]);
        let access = &live(&planes, 0)[0].access;
        assert!(access.sees(OrgId(7)) && !access.sees(OrgId(8)));
        assert!(Access::Shared.sees(OrgId(8)));
    }
}
