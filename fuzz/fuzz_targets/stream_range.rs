//! Range reads on arbitrary bytes and ranges: nothing may panic, and when the
//! stream is valid every range equals the matching slice of the whole
//! plaintext, through both the positioned and the seeking reader.
#![no_main]

use std::io::{Cursor, Read, Seek, SeekFrom};

use atrest_filekey::FileKey;
use atrest_stream::{Opener, Options};
use libfuzzer_sys::fuzz_target;

const KEY: [u8; 32] = [0x42; 32];
const CONTEXT: &[u8] = b"fuzz context";

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let (range, stream) = data.split_at(4);
    let start = u64::from(u16::from_le_bytes([range[0], range[1]]));
    let len = usize::from(u16::from_le_bytes([range[2], range[3]]));
    let key = FileKey::from_secret_bytes(&KEY);

    let whole = Opener::new(&key, CONTEXT, Options::default())
        .open(stream)
        .ok();
    let expected = whole.as_ref().map(|p| {
        let from = (start as usize).min(p.len());
        p[from..(from + len).min(p.len())].to_vec()
    });

    if let Ok(access) = Opener::new(&key, CONTEXT, Options::default()).random_access(stream) {
        let mut buf = vec![0u8; len];
        let got = access.read_at(&mut buf, start).map(|n| buf[..n].to_vec());
        if let Some(expected) = &expected {
            assert_eq!(got.as_ref().ok(), Some(expected));
        }
        let _ = access.copy_range(start..start.saturating_add(len as u64), &mut Vec::new());
    }
    if let Ok(mut decryptor) =
        Opener::new(&key, CONTEXT, Options::default()).reader(Cursor::new(stream))
    {
        let mut out = Vec::new();
        let got = decryptor
            .seek(SeekFrom::Start(start))
            .and_then(|_| decryptor.by_ref().take(len as u64).read_to_end(&mut out))
            .map(|_| out);
        if let Some(expected) = &expected {
            assert_eq!(got.as_ref().ok(), Some(expected));
        }
    }
});
