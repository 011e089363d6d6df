//! No import circle in the library or the gateway: scripts/import-graph draws each crate's
//! `use crate::` graph and fails on a strongly connected component of more than one module.

use std::path::Path;
use std::process::Command;

#[test]
fn the_library_and_the_gateway_have_no_import_circle() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    for src in ["crates/kafkit/src", "crates/kafkit-gateway/src"] {
        let output = Command::new("python3")
            .arg(root.join("scripts/import-graph"))
            .arg(root.join(src))
            .output()
            .expect("python3 runs scripts/import-graph");
        let report = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{src}: {report}");
        assert!(report.contains(" 0 cycles"), "{src}: {report}");
    }
}
