//! Tenant keys kept in the token (see [`crate::tenant_key`]).

use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass};
use zeroize::Zeroize;

use atrest_filekey::{KeyId, TenantId};

use super::token::{TENANT_KEY_PREFIX, Token, map_error};
use crate::{DerivedKey, ProviderError, RootKeyRef};

/// Tenant keys held in the token (see [`crate::tenant_key`]): one
/// generic secret per tenant, made inside the token (sensitive, not
/// extractable, usable only for `CKM_SHA256_HMAC` signing), so the key
/// never exists outside it and a purge destroys it there. Its label is
/// `atrest-tenant-<tenant>-<TIK id>`.
impl Token {
    fn tenant_key_ref(tenant: TenantId, tik_id: KeyId) -> Result<RootKeyRef, crate::Error> {
        Ok(RootKeyRef::new(
            "tenant-keys",
            format!("{TENANT_KEY_PREFIX}{tenant}-{tik_id}"),
            1,
        )?)
    }

    /// [`TenantKeyStore::create`](crate::TenantKeyStore::create), on the
    /// calling thread.
    pub(crate) fn create_tenant_key(
        &self,
        tenant: TenantId,
        tik_id: KeyId,
    ) -> Result<(), crate::Error> {
        let key = Self::tenant_key_ref(tenant, tik_id)?;
        let guard = self.session(&key)?;
        let session = guard.as_ref().unwrap_or_else(|| unreachable!("opened"));
        if Self::find(session, key.label())
            .map_err(|e| map_error(&key, e))?
            .is_some()
        {
            return Err(crate::Error::TenantExists(tenant));
        }
        let template = vec![
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::GENERIC_SECRET),
            Attribute::Label(key.label().as_bytes().to_vec()),
            Attribute::ValueLen(32.into()),
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Sign(true),
            Attribute::Verify(false),
            Attribute::Encrypt(false),
            Attribute::Decrypt(false),
            Attribute::Wrap(false),
            Attribute::Unwrap(false),
            Attribute::Derive(false),
            Attribute::AllowedMechanisms(vec![MechanismType::SHA256_HMAC]),
        ];
        let _ = session
            .generate_key(&Mechanism::GenericSecretKeyGen, &template)
            .map_err(|e| map_error(&key, e))?;
        Ok(())
    }

    /// [`TenantKeyStore::derive`](crate::TenantKeyStore::derive), on the
    /// calling thread: the token computes the HMAC.
    pub(crate) fn derive_with_tenant_key(
        &self,
        tenant: TenantId,
        tik_id: KeyId,
        input: &[u8],
    ) -> Result<DerivedKey, crate::Error> {
        let key = Self::tenant_key_ref(tenant, tik_id)?;
        let result = self.with_session(&key, |session| {
            let handle = self.handle(session, &key)?;
            session.sign(&Mechanism::Sha256Hmac, handle, input)
        });
        match result {
            Ok(mut mac) => {
                let material = DerivedKey::from_secret_slice(&mac);
                mac.zeroize();
                material.ok_or(crate::Error::Misuse("HMAC-SHA256 gives 32 bytes"))
            }
            Err(ProviderError::NotFound { .. }) => Err(crate::Error::TenantKeyMissing(tenant)),
            Err(error) => Err(error.into()),
        }
    }

    /// [`TenantKeyStore::destroy_key`](crate::TenantKeyStore::destroy_key),
    /// on the calling thread.
    pub(crate) fn destroy_tenant_key(
        &self,
        tenant: TenantId,
        tik_id: KeyId,
    ) -> Result<bool, crate::Error> {
        let key = Self::tenant_key_ref(tenant, tik_id)?;
        let destroyed = self.with_session(&key, |session| {
            let mut destroyed = false;
            for handle in session.find_objects(&[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::Label(key.label().as_bytes().to_vec()),
            ])? {
                session.destroy_object(handle)?;
                destroyed = true;
            }
            Ok(destroyed)
        })?;
        Ok(destroyed)
    }

    /// [`TenantKeyStore::holds_keys_of`](crate::TenantKeyStore::holds_keys_of),
    /// on the calling thread.
    pub(crate) fn holds_tenant_keys(&self, tenant: TenantId) -> Result<bool, crate::Error> {
        let prefix = format!("{TENANT_KEY_PREFIX}{tenant}-");
        let key = RootKeyRef::new("tenant-keys", prefix.clone(), 1)?;
        Ok(self.with_session(&key, |session| {
            for handle in session.find_objects(&[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::GENERIC_SECRET),
            ])? {
                let label = session.get_attributes(handle, &[AttributeType::Label])?;
                if label.iter().any(|attribute| {
                    matches!(attribute, Attribute::Label(label) if label.starts_with(prefix.as_bytes()))
                }) {
                    return Ok(true);
                }
            }
            Ok(false)
        })?)
    }

    /// [`TenantKeyStore::destroy`](crate::TenantKeyStore::destroy), on the
    /// calling thread.
    pub(crate) fn destroy_tenant_keys(&self, tenant: TenantId) -> Result<u64, crate::Error> {
        let prefix = format!("{TENANT_KEY_PREFIX}{tenant}-");
        let key = RootKeyRef::new("tenant-keys", prefix.clone(), 1)?;
        let destroyed = self.with_session(&key, |session| {
            let mut destroyed = 0;
            let candidates = session.find_objects(&[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::GENERIC_SECRET),
            ])?;
            for handle in candidates {
                let label = session.get_attributes(handle, &[AttributeType::Label])?;
                let ours = label.iter().any(|attribute| {
                    matches!(attribute, Attribute::Label(label) if label.starts_with(prefix.as_bytes()))
                });
                if ours {
                    session.destroy_object(handle)?;
                    destroyed += 1;
                }
            }
            Ok(destroyed)
        })?;
        Ok(destroyed)
    }
}
