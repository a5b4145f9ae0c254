//! Keeping the caches true to the store: before a cached tenant record or
//! TIK is used, the hierarchy looks at the store's change log (at most
//! once per poll interval) and drops what another process changed — a
//! purge, a revocation, a TIK roll made by the operator program or by
//! another instance reach this one within the interval plus one query.
//!
//! A value loaded from the store while a flush happens is not cached (the
//! flush epoch moved on), so a record read before a change cannot outlive
//! the flush that the change caused.

use std::sync::atomic::Ordering::{AcqRel, Acquire};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use atrest_filekey::TenantId;

use super::KeyHierarchy;
use crate::Error;
use crate::store::TenantState;

/// The default longest time between two looks at the store's change log.
pub const DEFAULT_CHANGE_POLL: Duration = Duration::from_secs(1);

/// Where the hierarchy stands in the store's change log.
#[derive(Debug, Default)]
pub(super) struct Watch {
    state: Mutex<Seen>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Seen {
    /// The counter up to which changes were applied to the caches.
    counter: Option<u64>,
    /// When the look that got `counter` began.
    looked: Option<Instant>,
}

impl Watch {
    fn seen(&self) -> Seen {
        *self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl KeyHierarchy {
    /// The flush epoch to compare before caching a value loaded now.
    pub(super) fn epoch(&self) -> u64 {
        self.flushes.load(Acquire)
    }

    /// Marks the caches flushed: values loaded before now are not cached.
    pub(super) fn next_epoch(&self) {
        let _ = self.flushes.fetch_add(1, AcqRel);
    }

    /// Applies the store's changes to the caches if the last look is older
    /// than the poll interval. Nothing is cached with a zero TTL, so
    /// nothing is looked at then.
    ///
    /// # Errors
    /// [`Error::Store`] if the change log cannot be read: nothing cached is
    /// used then.
    pub(super) async fn catch_up(&self) -> Result<(), Error> {
        if self.ttl.is_zero() {
            return Ok(());
        }
        if let Some(looked) = self.watch.seen().looked
            && looked.elapsed() < self.change_poll
        {
            return Ok(());
        }
        self.look().await
    }

    /// Reads the store's change log now and drops what changed from the
    /// caches.
    async fn look(&self) -> Result<(), Error> {
        let began = Instant::now();
        let seen = self.watch.seen();
        let changes = self.store.changes_since(seen.counter.unwrap_or(0)).await?;
        match (seen.counter, &changes.tenants) {
            // What was cached before the first look may predate any change.
            (None, _) | (_, None) => self.flush_cache(),
            (Some(_), Some(tenants)) => {
                for tenant in tenants {
                    self.flush_tenant(*tenant);
                }
            }
        }
        let mut state = self
            .watch
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Of two looks at once, the later one's start and counter stand.
        if state.looked.is_none_or(|looked| looked < began) {
            *state = Seen {
                counter: Some(changes.counter),
                looked: Some(began),
            };
        }
        Ok(())
    }

    /// Confirms, from the store as it is now (its change log read by this
    /// call), that `tenant` is not purged. A seal asks this after its
    /// commit, so that no upload is acknowledged once a purge of its
    /// tenant has completed, on any instance.
    ///
    /// # Errors
    /// [`Error::Purged`]; [`Error::Store`]; as for [`KeyHierarchy::tenant`]
    /// if the tenant's record must be read again.
    pub async fn confirm_not_purged(&self, tenant: TenantId) -> Result<(), Error> {
        if !self.ttl.is_zero() {
            self.look().await?;
        }
        let entry = self.tenant_entry(tenant).await?;
        if entry.record.state == TenantState::Purged {
            return Err(Error::Purged(tenant));
        }
        Ok(())
    }
}
