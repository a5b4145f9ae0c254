//! A root-key provider that injects faults, for testing how a service and
//! the hierarchy behave when a key service is unavailable, refuses, or is
//! slow.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::PoisonError;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::{KeyMaterial, ProviderError, RootKeyProvider, RootKeyRef, TikBinding};

/// What [`FaultInjector`] does to each call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fault {
    /// Passes calls through.
    #[default]
    None,
    /// Fails every call with [`ProviderError::Unavailable`].
    Unavailable,
    /// Fails every call with [`ProviderError::AccessDenied`].
    AccessDenied,
    /// Fails every call with [`ProviderError::NotFound`].
    NotFound,
    /// Waits this long on the runtime's blocking pool, then passes the
    /// call through: the call waits, as on a slow key service, and the
    /// runtime's worker threads go on serving other tasks.
    Slow(Duration),
}

/// Wraps a real provider and injects a configurable [`Fault`] into every
/// call; counts the calls that reached it.
pub struct FaultInjector {
    inner: Arc<dyn RootKeyProvider>,
    fault: Mutex<Fault>,
    calls: AtomicU64,
}

impl FaultInjector {
    /// Wraps `inner`, passing calls through until [`FaultInjector::set`].
    pub fn new(inner: Arc<dyn RootKeyProvider>) -> Self {
        Self {
            inner,
            fault: Mutex::new(Fault::None),
            calls: AtomicU64::new(0),
        }
    }

    /// Sets the fault for the following calls.
    pub fn set(&self, fault: Fault) {
        *self.fault.lock().unwrap_or_else(PoisonError::into_inner) = fault;
    }

    /// How many wrap and unwrap calls were made.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    async fn inject(&self, key: &RootKeyRef) -> Result<(), ProviderError> {
        let _ = self.calls.fetch_add(1, Ordering::Relaxed);
        let fault = *self.fault.lock().unwrap_or_else(PoisonError::into_inner);
        match fault {
            Fault::None => Ok(()),
            Fault::Slow(delay) => {
                atrest_core::blocking::run(move || std::thread::sleep(delay)).await;
                Ok(())
            }
            Fault::Unavailable => Err(ProviderError::Unavailable {
                key: key.clone(),
                detail: "injected fault".into(),
            }),
            Fault::AccessDenied => Err(ProviderError::AccessDenied {
                key: key.clone(),
                detail: "injected fault".into(),
            }),
            Fault::NotFound => Err(ProviderError::NotFound { key: key.clone() }),
        }
    }
}

impl core::fmt::Debug for FaultInjector {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("FaultInjector")
            .field("provider", &self.inner.name())
            .field(
                "fault",
                &*self.fault.lock().unwrap_or_else(PoisonError::into_inner),
            )
            .finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl RootKeyProvider for FaultInjector {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn current_version(&self, label: &str) -> Result<u32, ProviderError> {
        self.inner.current_version(label).await
    }

    async fn wrap(
        &self,
        key: &RootKeyRef,
        material: &KeyMaterial,
        binding: &TikBinding,
    ) -> Result<Vec<u8>, ProviderError> {
        self.inject(key).await?;
        self.inner.wrap(key, material, binding).await
    }

    async fn unwrap(
        &self,
        key: &RootKeyRef,
        wrapped: &[u8],
        binding: &TikBinding,
    ) -> Result<KeyMaterial, ProviderError> {
        self.inject(key).await?;
        self.inner.unwrap(key, wrapped, binding).await
    }
}
