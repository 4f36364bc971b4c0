//! `docs/plugin-authoring.md` is followed word by word in a fresh directory and must
//! produce a plugin (a Redis backup) that backs up and restores through `stowage`.

use std::process::Command;

#[test]
fn the_plugin_authoring_guide_works_as_written() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/check-plugin-authoring.sh");
    let output = Command::new("bash").arg(script).output().expect("run the guide");
    assert!(
        output.status.success(),
        "following docs/plugin-authoring.md failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
