//! `meeting-share` run end to end, as a user would.

#![allow(
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use atrest_test_support::TempDir;
use std::process::Command;

#[test]
fn meeting_share_releases_items_only_to_authenticated_participants() {
    let dir = TempDir::new("meeting");
    let output = Command::new(env!("CARGO_BIN_EXE_meeting-share"))
        .args(["--json", "--dir"])
        .arg(dir.path().join("m"))
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

#[test]
fn without_a_directory_it_leaves_no_deployment_behind() {
    let tmp = TempDir::new("meeting-tmp");
    let output = Command::new(env!("CARGO_BIN_EXE_meeting-share"))
        .env("TMPDIR", tmp.path())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}
