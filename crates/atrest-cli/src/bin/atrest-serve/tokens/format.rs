//! The token file's format: a JSON document of version 1 listing, per
//! token, its id, principal, SHA-256 and creation time. Parsed by a pure
//! function of the file's bytes (the `token_file` fuzz target runs it).

use serde::{Deserialize, Serialize};

/// The format's version.
pub(crate) const FORMAT_VERSION: u32 = 1;

/// One token, as the file keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TokenEntry {
    /// Its id (8 hex digits), also the token's visible prefix.
    pub id: String,
    /// The principal it stands for.
    pub principal: String,
    /// The id of the tenant it was made for (the one the principal's
    /// tenant name named then): it works only while that name still names
    /// that tenant. Absent in tokens made before tokens were bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// SHA-256 of the token, in hex.
    pub sha256: String,
    /// When it was made (seconds since the Unix epoch).
    pub created: u64,
}

/// The whole file.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileContents {
    pub(crate) version: u32,
    pub(crate) tokens: Vec<TokenEntry>,
}

/// The file's contents, if `bytes` are a token file of this version whose
/// every principal `valid_principal` accepts and every hash is 64 hex
/// digits; else why not.
pub(crate) fn parse(
    bytes: &[u8],
    valid_principal: impl Fn(&str) -> bool,
) -> Result<FileContents, String> {
    let contents: FileContents = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    if contents.version != FORMAT_VERSION {
        return Err(format!(
            "version {} is not {FORMAT_VERSION}",
            contents.version
        ));
    }
    for entry in &contents.tokens {
        if !valid_principal(&entry.principal) {
            return Err(format!("bad principal {:?}", entry.principal));
        }
        if let Some(tenant) = &entry.tenant
            && tenant.parse::<atrest::filekey::TenantId>().is_err()
        {
            return Err(format!("bad tenant id for token {:?}", entry.id));
        }
        let hash_ok =
            entry.sha256.len() == 64 && entry.sha256.bytes().all(|b| b.is_ascii_hexdigit());
        if !hash_ok {
            return Err(format!("bad hash for token {:?}", entry.id));
        }
    }
    Ok(contents)
}
