//! Erasure after deletions: a `DELETE` removes a version's record at once
//! and its key for good shortly after, once the tenant's deletions are
//! made final (`Deployment::erase_deleted`: the TIK rolled, every other
//! file key re-wrapped, the older versions retired with their keys).
//! Deletions that arrive while a tenant's erasure runs are made final by
//! one more erasure after it, which waits at least as long as the last
//! took: one per burst of deletions, not one per deletion (each re-wraps
//! every key of the tenant), and a tenant's keys are never re-wrapped more
//! than half the time, however its users delete. An erasure that fails
//! (another instance erasing the same tenant at once, a key service
//! unavailable) is tried again a few times; one still undone when the
//! service stops is finished by `atrest erase`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use atrest_deployment::Deployment;

/// How long an erasure waits for more deletions of its tenant.
const GATHER: Duration = Duration::from_millis(500);

/// Tries before an erasure is left to the operator.
const TRIES: u32 = 4;

/// The tenants whose deletions are being made final.
#[derive(Debug)]
pub(crate) struct Eraser {
    deployment: Arc<Deployment>,
    /// By tenant: whether more deletions arrived since its erasure began.
    running: Mutex<HashMap<String, bool>>,
    /// By tenant: when its next erasure may start (its last one's end plus
    /// as long again), kept beyond the run that set it.
    not_before: Mutex<HashMap<String, tokio::time::Instant>>,
}

impl Eraser {
    pub(crate) fn new(deployment: Arc<Deployment>) -> Self {
        Self {
            deployment,
            running: Mutex::new(HashMap::new()),
            not_before: Mutex::new(HashMap::new()),
        }
    }

    /// Makes `tenant`'s deletions final soon (see the module docs).
    pub(crate) fn erase_soon(self: &Arc<Self>, tenant: &str) {
        let start = {
            let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
            match running.get_mut(tenant) {
                Some(again) => {
                    *again = true;
                    false
                }
                None => {
                    running.insert(tenant.to_owned(), false);
                    true
                }
            }
        };
        if start {
            let (eraser, tenant) = (Arc::clone(self), tenant.to_owned());
            drop(tokio::spawn(async move { eraser.run(&tenant).await }));
        }
    }

    /// The tenants whose erasure is running or waiting.
    pub(crate) fn busy(&self) -> Vec<String> {
        self.running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .cloned()
            .collect()
    }

    async fn run(&self, tenant: &str) {
        loop {
            // The next erasure of the tenant waits at least as long as the
            // last one took, in this run or an earlier one: deletions that
            // never stop (a user deleting and uploading in a loop) keep its
            // keys re-wrapped half the time at most, not the whole time.
            let not_before = self
                .not_before
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(tenant)
                .copied();
            let now = tokio::time::Instant::now();
            tokio::time::sleep_until((now + GATHER).max(not_before.unwrap_or(now))).await;
            {
                let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
                if let Some(again) = running.get_mut(tenant) {
                    *again = false;
                }
            }
            let started = tokio::time::Instant::now();
            self.erase(tenant).await;
            let took = started.elapsed();
            let _ = self
                .not_before
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(tenant.to_owned(), tokio::time::Instant::now() + took);
            let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
            if running.get(tenant).copied() != Some(true) {
                running.remove(tenant);
                return;
            }
        }
    }

    async fn erase(&self, tenant: &str) {
        for attempt in 1..=TRIES {
            match self.deployment.erase_deleted(tenant, &mut |_| {}).await {
                Ok(report) if report.pending.is_empty() => {
                    tracing::info!(
                        tenant,
                        "deletions erased: {} file keys re-wrapped under TIK version {}, {} versions retired",
                        report.rewrap.rewrapped,
                        report.version,
                        report.retired.len()
                    );
                    return;
                }
                Ok(report) => tracing::warn!(
                    tenant,
                    "deletions not all erased: TIK versions {:?} still used by uploads in flight",
                    report.pending
                ),
                Err(error) => tracing::warn!(tenant, attempt, "erasing deletions failed: {error}"),
            }
            tokio::time::sleep(GATHER * 2_u32.pow(attempt)).await;
        }
        tracing::error!(
            tenant,
            "deletions not erased after {TRIES} tries: run `atrest erase {tenant}`"
        );
    }
}
