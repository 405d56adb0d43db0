//! The fuzz targets' corpus (`fuzz/corpus/<target>/`, seeds and inputs that once crashed)
//! through the same entry points the coverage-guided fuzzer drives
//! (`warren::fuzzing`, `fuzz/run.sh`), on the stable toolchain: CI replays every input.

use std::path::Path;

#[test]
fn every_corpus_input_runs_clean() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let mut total = 0;
    for (name, run) in warren::fuzzing::TARGETS {
        let dir = root.join(name);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "no corpus for {name}");
        for f in files {
            let data = std::fs::read(&f).unwrap();
            let r = std::panic::catch_unwind(|| run(&data));
            assert!(r.is_ok(), "{name}: {} panics", f.display());
            total += 1;
        }
    }
    assert!(total >= warren::fuzzing::TARGETS.len());
}
