//! Tenant names as last authenticated, so that a request does not read
//! its tenant's name from the catalog every time (a request resolves the
//! name it addresses, and the membership policy the name of the tenant
//! whose keys it asks for).
//!
//! What is remembered is the catalog's row itself (name, tenant, tag),
//! and only once its tag authenticated under a key the tenant still has.
//! Each use authenticates the row again against the key hierarchy, whose
//! caches follow the key store's change log: a tenant purged here or by
//! another process (the only way its name can come to name another
//! tenant) makes the row fail, which forgets it and sends the caller back
//! to the catalog. A row changed in the catalog behind the service's back
//! cannot be authentic, so the remembered one is the true one; such an
//! edit is still noticed (refused and audited, as ever) once the row is
//! read again: rows are kept for a second (the key hierarchy's change
//! poll), and not at all when TIKs are not cached.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};
use std::time::{Duration, Instant};

use atrest::TenantName;
use atrest::filekey::TenantId;
use atrest::tenant::KeyHierarchy;

/// Rows remembered at most; past it, those too old go, and if that is not
/// enough, all of them.
const MOST: usize = 4096;

/// The authenticated tenant names and the hierarchy that authenticates
/// them; see the [module documentation](self).
#[derive(Debug)]
pub(crate) struct TenantNames {
    keys: RwLock<Weak<KeyHierarchy>>,
    lifetime: Duration,
    rows: Mutex<Rows>,
}

#[derive(Debug, Default)]
struct Rows {
    by_name: HashMap<String, Remembered>,
    by_tenant: HashMap<TenantId, Remembered>,
}

#[derive(Debug, Clone)]
struct Remembered {
    row: TenantName,
    at: Instant,
}

impl TenantNames {
    /// Names remembered for at most `lifetime` (none if it is zero).
    pub(crate) fn new(lifetime: Duration) -> Self {
        Self {
            keys: RwLock::new(Weak::new()),
            lifetime,
            rows: Mutex::new(Rows::default()),
        }
    }

    /// Authenticates names with `keys` from now on, forgetting every row
    /// authenticated by the hierarchy before it.
    pub(crate) fn set(&self, keys: &Arc<KeyHierarchy>) {
        *self.keys.write().unwrap_or_else(PoisonError::into_inner) = Arc::downgrade(keys);
        *self.rows() = Rows::default();
    }

    /// The hierarchy names are authenticated with, once set.
    pub(crate) fn keys(&self) -> Option<Arc<KeyHierarchy>> {
        self.keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .upgrade()
    }

    /// The remembered row of the tenant named `name`, if it is there, not
    /// too old and authenticates now; else `None` (and it is forgotten):
    /// read the catalog.
    pub(crate) async fn by_name(&self, name: &str) -> Option<TenantName> {
        let remembered = self.rows().by_name.get(name).cloned()?;
        self.still_authentic(remembered).await
    }

    /// The remembered row naming `tenant`, as [`TenantNames::by_name`].
    pub(crate) async fn by_tenant(&self, tenant: TenantId) -> Option<TenantName> {
        let remembered = self.rows().by_tenant.get(&tenant).cloned()?;
        self.still_authentic(remembered).await
    }

    /// Remembers `row`, which the caller has just read from the catalog
    /// and authenticated with the hierarchy (its tag verified under a key
    /// the tenant has).
    pub(crate) fn authenticated(&self, row: &TenantName) {
        if self.lifetime.is_zero() {
            return;
        }
        let mut rows = self.rows();
        if rows.by_name.len() >= MOST || rows.by_tenant.len() >= MOST {
            let lifetime = self.lifetime;
            rows.by_name.retain(|_, kept| kept.at.elapsed() < lifetime);
            rows.by_tenant
                .retain(|_, kept| kept.at.elapsed() < lifetime);
            if rows.by_name.len() >= MOST || rows.by_tenant.len() >= MOST {
                *rows = Rows::default();
            }
        }
        // A name or a tenant is in at most one row.
        if let Some(old) = rows.by_name.remove(&row.name) {
            let _ = rows.by_tenant.remove(&old.row.tenant);
        }
        if let Some(old) = rows.by_tenant.remove(&row.tenant) {
            let _ = rows.by_name.remove(&old.row.name);
        }
        let remembered = Remembered {
            row: row.clone(),
            at: Instant::now(),
        };
        let _ = rows.by_name.insert(row.name.clone(), remembered.clone());
        let _ = rows.by_tenant.insert(row.tenant, remembered);
    }

    async fn still_authentic(&self, remembered: Remembered) -> Option<TenantName> {
        let keys = self.keys()?;
        let fresh = remembered.at.elapsed() < self.lifetime;
        if fresh
            && atrest::authenticate_tenant_name(&keys, &remembered.row)
                .await
                .is_ok()
        {
            return Some(remembered.row);
        }
        self.forget(&remembered.row);
        None
    }

    /// Forgets `row` (unless a newer row took its place meanwhile).
    fn forget(&self, row: &TenantName) {
        let mut rows = self.rows();
        if rows
            .by_name
            .get(&row.name)
            .is_some_and(|kept| kept.row == *row)
        {
            let _ = rows.by_name.remove(&row.name);
        }
        if rows
            .by_tenant
            .get(&row.tenant)
            .is_some_and(|kept| kept.row == *row)
        {
            let _ = rows.by_tenant.remove(&row.tenant);
        }
    }

    fn rows(&self) -> std::sync::MutexGuard<'_, Rows> {
        self.rows.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
