//! Opening files into memory, for tests that compare what comes back.

use std::ops::Range;

use atrest::filekey::{FileVersion, TenantId};
use atrest::tenant::Access;
use atrest::{Error, FileRecord, FileSelector, Files, WriterSink};

/// Opens file `name` of `tenant` (version `version`, or the newest; bytes
/// `range`, or all of it) into a buffer: the record and the plaintext.
///
/// # Errors
/// Those of [`Files::open`].
pub async fn read(
    files: &Files,
    access: &Access<'_>,
    tenant: TenantId,
    name: &str,
    version: Option<FileVersion>,
    range: Option<Range<u64>>,
) -> Result<(FileRecord, Vec<u8>), Error> {
    let mut sink = WriterSink(Vec::new());
    let file = FileSelector {
        tenant,
        name,
        version,
    };
    let record = files.open(access, &file, range, &mut sink).await?;
    Ok((record, sink.0))
}

/// Opens bytes `range` of file `name` of `tenant` into `out`: the record
/// and the number of bytes.
///
/// # Errors
/// Those of [`Files::open`].
pub async fn read_range(
    files: &Files,
    access: &Access<'_>,
    tenant: TenantId,
    name: &str,
    version: Option<FileVersion>,
    range: Range<u64>,
    out: &mut Vec<u8>,
) -> Result<(FileRecord, u64), Error> {
    let (record, bytes) = read(files, access, tenant, name, version, Some(range)).await?;
    out.extend_from_slice(&bytes);
    Ok((record, bytes.len() as u64))
}
