//! `meeting-share` run end to end, as a user would.

#![allow(
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::path::PathBuf;
use std::process::Command;

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let path = std::env::temp_dir().join(format!(
            "atrest-examples-{name}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn meeting_share_releases_items_only_to_authenticated_participants() {
    let dir = TempDir::new("meeting");
    let output = Command::new(env!("CARGO_BIN_EXE_meeting-share"))
        .args(["--json", "--dir"])
        .arg(dir.0.join("m"))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["distinct_item_keys"], report["items"]);
    assert_eq!(report["audit_verified"], true);
    for attempt in report["attempts"].as_array().unwrap() {
        let released = attempt["outcome"] == "released";
        assert_eq!(released, attempt["authenticated"] == true, "{attempt}");
    }
}
