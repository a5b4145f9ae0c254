//! Checking every copy of a blob against the length and digest its record
//! gives, and repairing the bad ones from a good one; neither needs a key.

use atrest_stream::RunBuffer;
use bytes::Bytes;
use futures_util::future::join_all;
use serde::Serialize;

use super::ReplicatedBlobs;
use crate::blob::{BlobDigest, BlobHasher, BlobName, Blobs};
use crate::{Error, ErrorKind};

/// How much a scrub or repair reads at a time.
const CHUNK_LEN: usize = 1 << 16;

/// The state of one copy of a blob, as [`ReplicatedBlobs::check`] found it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
#[non_exhaustive]
pub enum CopyState {
    /// The length and digest are the record's.
    Good,
    /// The location has no such blob.
    Missing,
    /// The copy has another length than the record's.
    WrongLength {
        /// The copy's length.
        len: u64,
    },
    /// The copy has the record's length but another digest.
    WrongDigest {
        /// The copy's digest.
        digest: BlobDigest,
    },
    /// The location did not answer, or failed while the copy was read.
    Unreachable {
        /// The error.
        error: String,
    },
}

impl CopyState {
    /// Whether the copy is good.
    pub fn is_good(&self) -> bool {
        matches!(self, Self::Good)
    }
}

/// What a repair did to one copy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
#[non_exhaustive]
pub enum RepairOutcome {
    /// A good copy, from location `from`, was written over it.
    Repaired {
        /// The location the good copy came from.
        from: usize,
    },
    /// It could not be repaired.
    Failed {
        /// Why.
        error: String,
    },
}

/// One copy of a blob, checked (and perhaps repaired).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CopyReport {
    /// The location's index (0 is the primary).
    pub location: usize,
    /// Where the location is.
    pub place: String,
    /// What the check found.
    #[serde(flatten)]
    pub state: CopyState,
    /// What a repair did, if one was asked for and the copy was bad.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repair: Option<RepairOutcome>,
}

/// Every copy of one blob, checked against the length and digest its
/// record gives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BlobCheck {
    /// The blob.
    pub blob: BlobName,
    /// The length the record gives.
    pub len: u64,
    /// The digest the record gives (`None` for a record from before blob
    /// digests: then only the length is checked).
    pub digest: Option<BlobDigest>,
    /// One report per location, primary first.
    pub copies: Vec<CopyReport>,
}

impl BlobCheck {
    /// Whether every copy was good when checked.
    pub fn is_clean(&self) -> bool {
        self.copies.iter().all(|copy| copy.state.is_good())
    }

    /// Whether every bad copy was repaired.
    pub fn is_repaired(&self) -> bool {
        self.copies.iter().all(|copy| {
            copy.state.is_good() || matches!(copy.repair, Some(RepairOutcome::Repaired { .. }))
        })
    }
}

impl ReplicatedBlobs {
    /// Checks every copy of blob `blob` against the length and digest its
    /// record gives (`digest` `None`: the length only). Reads each copy
    /// whole, the locations at once; needs no key.
    pub async fn check(&self, blob: &BlobName, len: u64, digest: Option<BlobDigest>) -> BlobCheck {
        let states = join_all(
            self.shared
                .locations
                .iter()
                .map(|store| check_copy(store.as_ref(), blob, len, digest)),
        )
        .await;
        let copies = self
            .shared
            .locations
            .iter()
            .zip(states)
            .enumerate()
            .map(|(location, (store, state))| CopyReport {
                location,
                place: store.location(),
                state,
                repair: None,
            })
            .collect();
        BlobCheck {
            blob: blob.clone(),
            len,
            digest,
            copies,
        }
    }

    /// Writes the first good copy of `check` (as [`ReplicatedBlobs::check`]
    /// found them) over every bad one: [`ReplicatedBlobs::repair_from`]
    /// that copy.
    ///
    /// This trusts the length and digest `check` was made with: give it
    /// those of an authenticated record, and prefer `repair_from` a copy
    /// the caller authenticated (`Files::verify_copy`), as `atrest blobs
    /// scrub --repair` does: a record edited to name a damaged copy's
    /// digest would otherwise have that copy written over the good ones.
    pub async fn repair(&self, check: &mut BlobCheck) {
        let source = check
            .copies
            .iter()
            .find(|copy| copy.state.is_good())
            .map(|copy| copy.location);
        self.repair_with(check, source).await;
    }

    /// Writes the copy at location `from` over every bad copy of `check`,
    /// and records what it did in each bad copy's [`CopyReport::repair`].
    /// A copy is written through the location's ordinary upload, so it
    /// replaces the bad one only once it is complete and durable, and only
    /// if what was copied has the length and digest of `check`.
    pub async fn repair_from(&self, check: &mut BlobCheck, from: usize) {
        self.repair_with(check, Some(from)).await;
    }

    async fn repair_with(&self, check: &mut BlobCheck, source: Option<usize>) {
        for copy in &mut check.copies {
            if copy.state.is_good() {
                continue;
            }
            let outcome = match source {
                None => RepairOutcome::Failed {
                    error: "no good copy to repair from".into(),
                },
                Some(from) => {
                    let copied = self
                        .copy_over(&check.blob, from, copy.location, check.len, check.digest)
                        .await;
                    match copied {
                        Ok(()) => RepairOutcome::Repaired { from },
                        Err(error) => RepairOutcome::Failed {
                            error: error.to_string(),
                        },
                    }
                }
            };
            copy.repair = Some(outcome);
        }
    }

    /// Copies blob `blob` from location `from` to location `to`, checking
    /// what was copied before the upload completes.
    async fn copy_over(
        &self,
        blob: &BlobName,
        from: usize,
        to: usize,
        len: u64,
        digest: Option<BlobDigest>,
    ) -> Result<(), Error> {
        let mut reader = self.store(from)?.open(blob).await?;
        let mut upload = self.store(to)?.create(blob).await?;
        let mut hasher = BlobHasher::new();
        let mut copied = 0u64;
        let mut chunk = RunBuffer::new();
        loop {
            chunk.clear();
            if reader.read(&mut chunk, CHUNK_LEN).await? == 0 {
                break;
            }
            hasher.update(&chunk);
            copied += chunk.len() as u64;
            if copied > len {
                break;
            }
            upload.write(Bytes::copy_from_slice(&chunk)).await?;
        }
        // Dropping the upload unfinished leaves the bad copy as it was.
        if copied != len || digest.is_some_and(|d| d != hasher.finish()) {
            return Err(Error::blob(
                ErrorKind::Integrity,
                "the good copy changed while it was copied; nothing was written",
            ));
        }
        let written = upload.finish().await?;
        if written != len {
            return Err(Error::blob(
                ErrorKind::Integrity,
                format!("the location kept {written} bytes of {len}"),
            ));
        }
        Ok(())
    }
}

/// Reads one copy whole and compares it with the record.
async fn check_copy(
    store: &dyn Blobs,
    blob: &BlobName,
    len: u64,
    digest: Option<BlobDigest>,
) -> CopyState {
    let mut reader = match store.open(blob).await {
        Ok(reader) => reader,
        Err(error) if error.kind() == ErrorKind::NotFound => return CopyState::Missing,
        Err(error) => {
            return CopyState::Unreachable {
                error: error.to_string(),
            };
        }
    };
    let mut hasher = BlobHasher::new();
    let mut read = 0u64;
    let mut chunk = RunBuffer::new();
    loop {
        chunk.clear();
        match reader.read(&mut chunk, CHUNK_LEN).await {
            Ok(0) => break,
            Ok(n) => {
                hasher.update(&chunk);
                read += n as u64;
            }
            Err(error) if error.kind() == ErrorKind::NotFound => return CopyState::Missing,
            Err(error) => {
                return CopyState::Unreachable {
                    error: error.to_string(),
                };
            }
        }
    }
    let found = hasher.finish();
    if read != len {
        CopyState::WrongLength { len: read }
    } else if digest.is_some_and(|d| d != found) {
        CopyState::WrongDigest { digest: found }
    } else {
        CopyState::Good
    }
}
