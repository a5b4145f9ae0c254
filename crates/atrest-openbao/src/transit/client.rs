//! Requests to the server: their URL and headers, the token (and reading
//! it again), the answer's body, and the mapping of failures to
//! [`ProviderError`]s.

use std::sync::PoisonError;

use atrest_tenant::{ProviderError, RootKeyRef};
use bytes::Bytes;
use reqwest::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use reqwest::{Method, Url};
use zeroize::{Zeroize as _, Zeroizing};

use super::TransitKeys;
use crate::error::{Failure, Op, map_failure, transport_failure};
use crate::wire;

/// Largest answer body read, in bytes.
const MAX_BODY: usize = 64 * 1024;

static TOKEN_HEADER: HeaderName = HeaderName::from_static("x-vault-token");
static NAMESPACE_HEADER: HeaderName = HeaderName::from_static("x-vault-namespace");
static REQUEST_HEADER: HeaderName = HeaderName::from_static("x-vault-request");

impl TransitKeys {
    /// Reads the token again from the configured [`Credentials`](crate::Credentials)
    /// (after the operator replaced it); requests from then on use the new
    /// one.
    ///
    /// # Errors
    /// [`ProviderError::Misconfigured`] if it cannot be read; the old
    /// token stays in use.
    pub fn reload_credentials(&self) -> Result<(), ProviderError> {
        let token = self.credentials.load(&self.name)?;
        *self.token.write().unwrap_or_else(PoisonError::into_inner) = token;
        Ok(())
    }

    fn token(&self) -> HeaderValue {
        self.token
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// `<address>/v1/<mount>/<operation>/<key>[/<suffix>]`.
    fn url(
        &self,
        key: &RootKeyRef,
        operation: &str,
        suffix: Option<&str>,
    ) -> Result<Url, ProviderError> {
        let mut url = self.base.clone();
        {
            let mut segments = url.path_segments_mut().map_err(|()| {
                map_failure(
                    key,
                    Op::ReadKey,
                    Failure::Request("the address cannot take a path".into()),
                )
            })?;
            let _ = segments.pop_if_empty().push("v1");
            let _ = segments.extend(self.mount.split('/'));
            let _ = segments.push(operation).push(key.label());
            if let Some(suffix) = suffix {
                let _ = segments.push(suffix);
            }
        }
        Ok(url)
    }

    /// Sends `operation` on `key` and returns the body of a successful
    /// answer (zeroized when dropped). It runs in the task that awaits it,
    /// on that task's tokio runtime; dropping the future cancels the
    /// request.
    pub(super) async fn request(
        &self,
        key: &RootKeyRef,
        op: Op,
        method: Method,
        operation: &str,
        suffix: Option<&str>,
        body: Option<Bytes>,
    ) -> Result<Zeroizing<Vec<u8>>, ProviderError> {
        self.check_key(key)?;
        // The HTTP client's connections and timers need a tokio runtime:
        // without one, say so rather than let tokio panic.
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(map_failure(
                key,
                op,
                Failure::Request("called outside a tokio runtime".into()),
            ));
        }
        let url = self.url(key, operation, suffix)?;
        self.send(key, op, method, url, body).await
    }

    async fn send(
        &self,
        key: &RootKeyRef,
        op: Op,
        method: Method,
        url: Url,
        body: Option<Bytes>,
    ) -> Result<Zeroizing<Vec<u8>>, ProviderError> {
        let mut request = self
            .client
            .request(method, url)
            .header(TOKEN_HEADER.clone(), self.token())
            .header(REQUEST_HEADER.clone(), HeaderValue::from_static("true"));
        if let Some(namespace) = &self.namespace {
            request = request.header(NAMESPACE_HEADER.clone(), namespace.clone());
        }
        if let Some(body) = body {
            request = request
                .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
                .body(body);
        }
        let mut response = request
            .send()
            .await
            .map_err(|e| map_failure(key, op, transport_failure(&e)))?;
        let status = response.status();
        let mut body = Zeroizing::new(Vec::with_capacity(4096));
        // An error answer is decided by its status: a large or broken body
        // after a 403 (a proxy's denial page, say) is still a refusal.
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    if body.len() + chunk.len() > MAX_BODY {
                        if status.is_success() {
                            return Err(map_failure(
                                key,
                                op,
                                Failure::Malformed("the answer is too large"),
                            ));
                        }
                        break;
                    }
                    body.extend_from_slice(&chunk);
                    if let Ok(mut owned) = chunk.try_into_mut() {
                        owned[..].zeroize();
                    }
                }
                Ok(None) => break,
                Err(e) if status.is_success() => {
                    return Err(map_failure(key, op, transport_failure(&e)));
                }
                Err(_) => break,
            }
        }
        if status.is_success() {
            return Ok(body);
        }
        let errors = wire::Errors::parse(&body);
        Err(map_failure(
            key,
            op,
            Failure::Status {
                status: status.as_u16(),
                errors: &errors,
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{key, provider};

    #[test]
    fn urls_are_built_from_segments() {
        let keys = provider("http://127.0.0.1:1/base/", "/tenants/contoso/");
        let url = keys.url(&key(1), "keys", Some("rotate")).unwrap();
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:1/base/v1/tenants/contoso/keys/contoso/rotate"
        );
        let url = keys.url(&key(3), "decrypt", None).unwrap();
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:1/base/v1/tenants/contoso/decrypt/contoso"
        );
    }
}
