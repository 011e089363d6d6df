//! The README's "Architecture" tree names paths that exist: a top-level line names a path from
//! the repository root, a line indented by two spaces a path inside the last top-level folder.

use std::path::Path;

#[test]
fn every_path_in_the_readme_architecture_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let section = readme
        .split("## Architecture")
        .nth(1)
        .expect("an Architecture section");
    let tree = section.split("```").nth(1).expect("a code block");
    let mut folder = String::new();
    let mut missing = Vec::new();
    for line in tree.lines().skip(1) {
        let indent = line.len() - line.trim_start().len();
        let Some(first) = line.split_whitespace().next() else {
            continue;
        };
        let name = first.trim_end_matches(',');
        let path = match indent {
            0 => {
                folder = name.to_owned();
                name.to_owned()
            }
            2 => format!("{folder}{name}"),
            _ => continue,
        };
        if !root.join(&path).exists() {
            missing.push(path);
        }
    }
    assert!(
        missing.is_empty(),
        "README Architecture names missing paths: {missing:?}"
    );
}
