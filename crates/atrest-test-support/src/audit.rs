//! In-memory audit sinks, for code under test that takes an
//! [`atrest_audit::Audit`] (the durable log is tested in `atrest-audit`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use atrest_audit::{Audit, Event, Outcome, Receipt, Record};

/// Keeps every record in memory, for tests that check what was audited.
/// Receipts number records from 0 and carry a zero hash.
#[derive(Debug, Default)]
pub struct Collected(Mutex<Vec<Record>>);

impl Collected {
    fn lock(&self) -> MutexGuard<'_, Vec<Record>> {
        // A test that panicked while recording already failed; the records
        // are still worth reading.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A copy of the records so far, oldest first.
    #[must_use]
    pub fn records(&self) -> Vec<Record> {
        self.lock().clone()
    }

    /// The event and outcome of each record so far, oldest first.
    #[must_use]
    pub fn events(&self) -> Vec<(Event, Outcome)> {
        self.lock()
            .iter()
            .map(|r| (r.event.clone(), r.outcome.clone()))
            .collect()
    }

    /// How many records so far match.
    pub fn count(&self, matches: impl Fn(&Event, &Outcome) -> bool) -> usize {
        self.lock()
            .iter()
            .filter(|r| matches(&r.event, &r.outcome))
            .count()
    }

    /// Forgets the records so far.
    pub fn clear(&self) {
        self.lock().clear();
    }
}

#[async_trait::async_trait]
impl Audit for Collected {
    async fn record(&self, record: Record) -> Result<Receipt, atrest_audit::Error> {
        let mut records = self.lock();
        let seq = records.len() as u64;
        records.push(record);
        Ok(Receipt { seq, hash: [0; 32] })
    }
}

/// Counts records and drops them, for benchmarks of code that audits: the
/// figures then measure that code, not a log's durability.
#[derive(Debug, Default)]
pub struct Counting(AtomicU64);

impl Counting {
    /// How many records were received.
    #[must_use]
    pub fn count(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[async_trait::async_trait]
impl Audit for Counting {
    async fn record(&self, record: Record) -> Result<Receipt, atrest_audit::Error> {
        drop(std::hint::black_box(record));
        let seq = self.0.fetch_add(1, Ordering::Relaxed);
        Ok(Receipt { seq, hash: [0; 32] })
    }
}
