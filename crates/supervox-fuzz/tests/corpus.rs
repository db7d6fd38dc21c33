//! "CI runs each target on the committed corpus": every file of
//! `fuzz/corpus/<target>/` and `fuzz/regressions/<target>/` goes through the
//! target's function, on stable, in `cargo test`. A target whose corpus is
//! missing or empty fails the test (never skipped silently); a target
//! without regressions yet has no `fuzz/regressions/<target>/` directory.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    v.sort();
    v
}

fn run(target: &str, f: fn(&[u8]), file: &Path) {
    let data = std::fs::read(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let outcome = std::panic::catch_unwind(|| f(&data));
    assert!(outcome.is_ok(), "target {target} failed on {}", file.display());
}

#[test]
fn every_target_runs_its_committed_corpus() {
    for (target, f) in supervox_fuzz::TARGETS {
        let corpus = root().join("corpus").join(target);
        assert!(corpus.is_dir(), "fuzz/corpus/{target} is missing");
        let inputs = files(&corpus);
        assert!(!inputs.is_empty(), "fuzz/corpus/{target} is empty");
        for file in &inputs {
            run(target, *f, file);
        }
        let regressions = root().join("regressions").join(target);
        if regressions.is_dir() {
            let inputs = files(&regressions);
            assert!(!inputs.is_empty(), "fuzz/regressions/{target} exists but is empty");
            for file in &inputs {
                run(target, *f, file);
            }
        }
    }
}

#[test]
fn every_target_has_a_fuzz_target_file() {
    for (target, _) in supervox_fuzz::TARGETS {
        let file = root().join("fuzz_targets").join(format!("{target}.rs"));
        let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        assert!(text.contains(&format!("supervox_fuzz::{target}(")), "{} calls another function", file.display());
    }
    let listed = files(&root().join("fuzz_targets")).len();
    assert_eq!(listed, supervox_fuzz::TARGETS.len(), "every fuzz target is in TARGETS");
}
