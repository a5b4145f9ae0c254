//! Seals: begun, given their keys and committed, or abandoned, each step
//! one transaction.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use atrest::catalog::{Precondition, SealTicket, SealedBlob};
use atrest::{BlobName, CatalogError, Error, FileRecord, check_name};
use atrest_filekey::{FileContext, FileId, OsRng, TenantId, WrappedFileKey};
use tokio_postgres::Transaction;

use super::{
    PgCatalog, RECORD_COLUMNS, corrupt, file_id, file_version, key_bytes, now, number, read_record,
    signed, stop, tik_number,
};
use crate::db::{Failure, Mode, PgError};

impl PgCatalog {
    /// Begins `seals` in one transaction.
    pub(super) async fn begin(
        &self,
        tenant: TenantId,
        seals: &[(String, BlobName)],
    ) -> Result<Vec<SealTicket>, Error> {
        for (name, _) in seals {
            check_name("file name", name)?;
        }
        let seals = Arc::new(seals.to_vec());
        let owner = self.owner.clone();
        self.run(Mode::Write, move |tx| {
            let seals = Arc::clone(&seals);
            let owner = owner.clone();
            Box::pin(async move { begin_in(tx, tenant, &seals, owner.as_deref()).await })
        })
        .await
    }

    /// Attaches `keys` in one transaction: every key is stored, or none.
    pub(super) async fn attach(
        &self,
        keys: &[(&SealTicket, &WrappedFileKey)],
    ) -> Result<(), Error> {
        let keys: Arc<Vec<(SealTicket, WrappedFileKey)>> = Arc::new(
            keys.iter()
                .map(|(seal, wrapped)| ((*seal).clone(), **wrapped))
                .collect(),
        );
        self.run(Mode::Write, move |tx| {
            let keys = Arc::clone(&keys);
            Box::pin(async move { attach_in(tx, &keys).await })
        })
        .await
    }

    /// Commits `seals` in one transaction, one durable commit.
    pub(super) async fn commit(
        &self,
        seals: &[(&SealTicket, SealedBlob)],
    ) -> Result<Vec<FileRecord>, Error> {
        let seals: Arc<Vec<(SealTicket, SealedBlob)>> = Arc::new(
            seals
                .iter()
                .map(|(seal, sealed)| ((*seal).clone(), sealed.clone()))
                .collect(),
        );
        self.run(Mode::Write, move |tx| {
            let seals = Arc::clone(&seals);
            Box::pin(async move { commit_in(tx, &seals).await })
        })
        .await
    }

    /// Deletes a seal in progress, and its name if it has no other version.
    pub(super) async fn abandon(&self, seal: &SealTicket) -> Result<(), Error> {
        let seal = Arc::new(seal.clone());
        self.run(Mode::Write, move |tx| {
            let seal = Arc::clone(&seal);
            Box::pin(async move {
                let context = &seal.context;
                let file = context.file.as_bytes().as_slice();
                let _ = tx
                    .execute(
                        "DELETE FROM atrest_catalog_versions
                         WHERE tenant = $1 AND file = $2 AND version = $3 AND blob = $4
                         AND state = 'sealing'",
                        &[
                            &context.tenant.as_bytes().as_slice(),
                            &file,
                            &number(context.version)?,
                            &seal.blob.as_str(),
                        ],
                    )
                    .await?;
                // A name whose first seal failed leaves no trace.
                let _ = tx
                    .execute(
                        "DELETE FROM atrest_catalog_files WHERE file = $1
                         AND NOT EXISTS (SELECT 1 FROM atrest_catalog_versions WHERE file = $1)",
                        &[&file],
                    )
                    .await?;
                Ok(())
            })
        })
        .await
    }
}

/// Lets this transaction's commit return before its WAL record is flushed
/// (`synchronous_commit = off`, for this transaction only): the steps that
/// lead up to a seal's commit, which flushes them with it, as PostgreSQL
/// flushes its WAL in order. A crash of the server before then loses only
/// rows of seals never committed (see [`atrest::Catalog::begin_seal`]).
async fn flushed_with_the_commit(tx: &Transaction<'_>) -> Result<(), Failure<Error>> {
    tx.batch_execute("SET LOCAL synchronous_commit = off")
        .await?;
    Ok(())
}

/// Begins every seal of `seals` with three statements whatever their
/// number: one upsert makes each new name's file (with a fresh id, and
/// nothing read: reads of the indexes' newest pages, which every concurrent
/// begin writes to, would make serializable transactions that begin at once
/// conflict) or finds the file of a name the catalog has, and moves the
/// file's last version number on by the batch's count of the name; the
/// versions go in with one insert. A name given twice gets two versions,
/// in order. Names are upserted in their order, so that two batches lock
/// the rows of the names they share in the same order (never a deadlock).
async fn begin_in(
    tx: &Transaction<'_>,
    tenant: TenantId,
    seals: &[(String, BlobName)],
    owner: Option<&str>,
) -> Result<Vec<SealTicket>, Failure<Error>> {
    flushed_with_the_commit(tx).await?;
    let id = tenant.as_bytes().as_slice();
    let started_at = signed(now(), "clock out of range")?;
    // Each name once, in order, with how many versions of it the batch
    // begins.
    let mut counts: BTreeMap<&str, i64> = BTreeMap::new();
    for (name, _) in seals {
        *counts.entry(name.as_str()).or_default() += 1;
    }
    let names: Vec<&str> = counts.keys().copied().collect();
    let numbers: Vec<i64> = counts.values().copied().collect();
    let fresh = counts
        .iter()
        .map(|_| FileId::time_ordered_now(&mut OsRng))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| stop(atrest_tenant::Error::from(e)))?;
    let fresh: Vec<&[u8]> = fresh
        .iter()
        .map(|file| file.as_bytes().as_slice())
        .collect();
    // Each name's file (made now with a fresh id, or the one it has) and
    // the highest version number given to it, this batch's included: the
    // batch's are the `count` up to it. One past the highest ever given,
    // so that a removed version's number never names other content (a
    // client's entity tag for it stays stale).
    let mut files: HashMap<String, (Vec<u8>, i64)> = HashMap::with_capacity(counts.len());
    for row in tx
        .query(
            "INSERT INTO atrest_catalog_files AS f (tenant, name, file, last_version)
             SELECT $1, name, file, count
             FROM unnest($2::text[], $3::bytea[], $4::bigint[]) AS new (name, file, count)
             ON CONFLICT (tenant, name) DO UPDATE SET last_version = excluded.last_version
                 + greatest(f.last_version, coalesce(
                     (SELECT max(v.version) FROM atrest_catalog_versions v WHERE v.file = f.file),
                     0))
             RETURNING name, file, last_version",
            &[&id, &names, &fresh, &numbers],
        )
        .await?
    {
        let name: String = row.try_get(0)?;
        let last: i64 = row.try_get(2)?;
        let count = counts.get(name.as_str()).copied().unwrap_or(0);
        let first = last
            .checked_sub(count)
            .and_then(|before| before.checked_add(1))
            .filter(|first| *first > 0)
            .ok_or_else(|| corrupt("file version"))?;
        let _ = files.insert(name, (row.try_get(1)?, first));
    }
    let mut tickets = Vec::with_capacity(seals.len());
    let (mut ids, mut versions, mut blobs) = (Vec::new(), Vec::new(), Vec::new());
    for (name, blob) in seals {
        let (file, next) = files
            .get_mut(name.as_str())
            .ok_or_else(|| corrupt("a name without its file"))?;
        let version = file_version(*next)?;
        *next = next.checked_add(1).ok_or_else(|| corrupt("file version"))?;
        tickets.push(SealTicket {
            context: FileContext::new(tenant, file_id(file)?, version),
            name: name.clone(),
            blob: blob.clone(),
        });
        ids.push(file.clone());
        versions.push(number(version)?);
        blobs.push(blob.as_str());
    }
    let _ = tx
        .execute(
            "INSERT INTO atrest_catalog_versions
             (tenant, file, version, state, blob, started_at, owner)
             SELECT $1, file, version, 'sealing', blob, $5, $6
             FROM unnest($2::bytea[], $3::bigint[], $4::text[]) AS new (file, version, blob)",
            &[&id, &ids, &versions, &blobs, &started_at, &owner],
        )
        .await
        .map_err(|e| PgError::lost_race(e, "atrest_catalog_versions_pkey"))?;
    Ok(tickets)
}

/// The columns that name the rows of `seals` (tenant, file, version and
/// blob), as arrays for a statement over all of them.
struct SealColumns<'a> {
    tenants: Vec<&'a [u8]>,
    files: Vec<&'a [u8]>,
    versions: Vec<i64>,
    blobs: Vec<&'a str>,
}

impl<'a> SealColumns<'a> {
    fn of<T>(seals: &'a [(SealTicket, T)]) -> Result<Self, Failure<Error>> {
        let tickets = || seals.iter().map(|(seal, _)| seal);
        Ok(Self {
            tenants: tickets()
                .map(|seal| seal.context.tenant.as_bytes().as_slice())
                .collect(),
            files: tickets()
                .map(|seal| seal.context.file.as_bytes().as_slice())
                .collect(),
            versions: tickets()
                .map(|seal| number(seal.context.version))
                .collect::<Result<_, _>>()?,
            blobs: tickets().map(|seal| seal.blob.as_str()).collect(),
        })
    }
}

/// Whether `changed` (the file and version of each row a statement over
/// every seal of `seals` changed) has every seal: if not, the first seal it
/// lacks is not in progress (or given twice: a row changes once).
fn all_changed<T>(
    seals: &[(SealTicket, T)],
    changed: &[tokio_postgres::Row],
) -> Result<(), Failure<Error>> {
    let mut left = changed
        .iter()
        .map(|row| Ok((row.try_get::<_, Vec<u8>>(0)?, row.try_get::<_, i64>(1)?)))
        .collect::<Result<Vec<_>, Failure<Error>>>()?;
    for (seal, _) in seals {
        let context = &seal.context;
        let key = (context.file.as_bytes().to_vec(), number(context.version)?);
        match left.iter().position(|row| *row == key) {
            Some(found) => drop(left.swap_remove(found)),
            None => {
                return Err(stop(CatalogError::SealNotInProgress {
                    version: context.version,
                }));
            }
        }
    }
    Ok(())
}

/// Attaches every key of `keys` with one statement, after checking once
/// for each TIK version they are under that it is not retired.
async fn attach_in(
    tx: &Transaction<'_>,
    keys: &[(SealTicket, WrappedFileKey)],
) -> Result<(), Failure<Error>> {
    flushed_with_the_commit(tx).await?;
    let mut checked: Vec<(&[u8], i64)> = Vec::new();
    for (seal, wrapped) in keys {
        let under = (
            seal.context.tenant.as_bytes().as_slice(),
            tik_number(wrapped.kek_version()),
        );
        if checked.contains(&under) {
            continue;
        }
        let retired: bool = tx
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM atrest_catalog_retired_tiks
                 WHERE tenant = $1 AND tik_version = $2)",
                &[&under.0, &under.1],
            )
            .await?
            .try_get(0)?;
        if retired {
            return Err(stop(CatalogError::TikRetired {
                version: wrapped.kek_version(),
            }));
        }
        checked.push(under);
    }
    let rows = SealColumns::of(keys)?;
    let wrapped: Vec<&[u8]> = keys.iter().map(|(_, key)| key_bytes(key)).collect();
    let tiks: Vec<i64> = keys
        .iter()
        .map(|(_, key)| tik_number(key.kek_version()))
        .collect();
    let changed = tx
        .query(
            "UPDATE atrest_catalog_versions v SET wrapped = k.wrapped, tik_version = k.tik_version
             FROM unnest($1::bytea[], $2::bytea[], $3::bigint[], $4::text[], $5::bytea[],
                         $6::bigint[]) AS k (tenant, file, version, blob, wrapped, tik_version)
             WHERE v.tenant = k.tenant AND v.file = k.file AND v.version = k.version
             AND v.blob = k.blob AND v.state = 'sealing' AND v.wrapped IS NULL
             RETURNING v.file, v.version",
            &[
                &rows.tenants,
                &rows.files,
                &rows.versions,
                &rows.blobs,
                &wrapped,
                &tiks,
            ],
        )
        .await?;
    all_changed(keys, &changed)?;
    Ok(())
}

/// Checks each precondition of `seals`, as if the seals before it in
/// `seals` were committed already: a seal of the same file earlier in the
/// list counts as its newest version.
async fn check_preconditions(
    tx: &Transaction<'_>,
    seals: &[(SealTicket, SealedBlob)],
) -> Result<(), Failure<Error>> {
    for (at, (seal, sealed)) in seals.iter().enumerate() {
        if sealed.precondition == Precondition::Any {
            continue;
        }
        let context = &seal.context;
        // A serializable transaction: two commits that each read the
        // newest version the other replaces cannot both succeed (one is
        // run again, and then sees the other's version).
        let stored: Option<i64> = tx
            .query_one(
                "SELECT max(version) FROM atrest_catalog_versions
                 WHERE file = $1 AND state = 'sealed'",
                &[&context.file.as_bytes().as_slice()],
            )
            .await?
            .try_get(0)?;
        let stored = stored.map(file_version).transpose()?;
        let earlier = seals
            .iter()
            .take(at)
            .map(|(earlier, _)| earlier.context)
            .filter(|earlier| earlier.file == context.file)
            .map(|earlier| earlier.version)
            .max();
        let newest = stored.max(earlier);
        if !sealed.precondition.holds(newest) {
            return Err(stop(CatalogError::PreconditionFailed {
                tenant: context.tenant,
                name: seal.name.clone(),
                newest,
            }));
        }
    }
    Ok(())
}

/// Commits every seal of `seals` with two statements whatever their
/// number, once their preconditions hold.
async fn commit_in(
    tx: &Transaction<'_>,
    seals: &[(SealTicket, SealedBlob)],
) -> Result<Vec<FileRecord>, Failure<Error>> {
    check_preconditions(tx, seals).await?;
    let rows = SealColumns::of(seals)?;
    let seal_times = seals
        .iter()
        .map(|(_, sealed)| signed(sealed.sealed_at, "seal time out of range"))
        .collect::<Result<Vec<_>, _>>()?;
    let plaintext_lens = seals
        .iter()
        .map(|(_, sealed)| signed(sealed.plaintext_len, "plaintext length out of range"))
        .collect::<Result<Vec<_>, _>>()?;
    let blob_lens = seals
        .iter()
        .map(|(_, sealed)| signed(sealed.blob_len, "blob length out of range"))
        .collect::<Result<Vec<_>, _>>()?;
    let segment_sizes: Vec<i64> = seals
        .iter()
        .map(|(_, sealed)| i64::from(sealed.segment_size))
        .collect();
    let formats: Vec<i16> = seals
        .iter()
        .map(|(_, sealed)| i16::from(sealed.format))
        .collect();
    let tags: Vec<&[u8]> = seals
        .iter()
        .map(|(_, sealed)| sealed.tag.as_bytes().as_slice())
        .collect();
    let digests: Vec<Option<&[u8]>> = seals
        .iter()
        .map(|(_, sealed)| sealed.blob_sha256.as_ref().map(|d| d.as_bytes().as_slice()))
        .collect();
    let media_types: Vec<Option<&str>> = seals
        .iter()
        .map(|(_, sealed)| sealed.media_type.as_ref().map(|m| m.as_str()))
        .collect();
    let changed = tx
        .query(
            "UPDATE atrest_catalog_versions v
             SET state = 'sealed', plaintext_len = s.plaintext_len, blob_len = s.blob_len,
                 segment_size = s.segment_size, format = s.format, sealed_at = s.sealed_at,
                 tag = s.tag, blob_sha256 = s.blob_sha256, media_type = s.media_type
             FROM unnest($1::bytea[], $2::bytea[], $3::bigint[], $4::text[], $5::bigint[],
                         $6::bigint[], $7::bigint[], $8::smallint[], $9::bytea[], $10::bytea[],
                         $11::text[], $12::bigint[])
                  AS s (tenant, file, version, blob, plaintext_len, blob_len, segment_size,
                        format, tag, blob_sha256, media_type, sealed_at)
             WHERE v.tenant = s.tenant AND v.file = s.file AND v.version = s.version
             AND v.blob = s.blob AND v.state = 'sealing' AND v.wrapped IS NOT NULL
             RETURNING v.file, v.version",
            &[
                &rows.tenants,
                &rows.files,
                &rows.versions,
                &rows.blobs,
                &plaintext_lens,
                &blob_lens,
                &segment_sizes,
                &formats,
                &tags,
                &digests,
                &media_types,
                &seal_times,
            ],
        )
        .await?;
    all_changed(seals, &changed)?;
    let read = tx
        .query(
            &format!(
                "SELECT {RECORD_COLUMNS} FROM atrest_catalog_versions v
                 JOIN atrest_catalog_files f ON f.file = v.file
                 JOIN unnest($1::bytea[], $2::bytea[], $3::bigint[]) AS s (tenant, file, version)
                 ON v.tenant = s.tenant AND v.file = s.file AND v.version = s.version"
            ),
            &[&rows.tenants, &rows.files, &rows.versions],
        )
        .await?;
    let mut records = read
        .iter()
        .map(read_record)
        .collect::<Result<Vec<_>, _>>()?;
    // In the order of `seals`.
    seals
        .iter()
        .map(|(seal, _)| {
            let context = &seal.context;
            records
                .iter()
                .position(|r| r.file == context.file && r.version == context.version)
                .map(|found| records.swap_remove(found))
                .ok_or_else(|| corrupt("a committed version without its record"))
        })
        .collect()
}
