//! The plugin contract: the built generator component exports the `stowage:plugin`
//! world of `wit/`, and files that are not plugins are refused with a precise error.

use stowage_tests::stowage::{plugin, run};

/// The version in `wit/plugin.wit`'s package declaration.
fn wit_package_version() -> String {
    let wit =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../wit/plugin.wit")).expect("wit/plugin.wit");
    let line = wit.lines().find(|line| line.starts_with("package ")).expect("a package declaration");
    line.trim_start_matches("package stowage:plugin@").trim_end_matches(';').to_owned()
}

#[test]
fn the_generator_exports_the_world_of_wit() {
    let inspected = run(["plugin", "inspect", "--plugin", "generator"], &[]).and_then(|r| r.ok()).expect("inspect");
    let field = |name: &str| {
        inspected
            .stdout
            .lines()
            .find_map(|line| line.strip_prefix(&format!("{name}:")).map(str::trim))
            .unwrap_or_else(|| panic!("no {name} in:\n{}", inspected.stdout))
            .to_owned()
    };
    assert_eq!(field("wit"), format!("stowage:plugin@{}", wit_package_version()));
    assert_eq!(field("name"), "generator");
    assert_eq!(field("operations"), "backup, restore");
    let sha256 = field("sha256");
    let bytes = std::fs::read(plugin("generator").expect("plugin")).expect("read plugin");
    use sha2::Digest;
    assert_eq!(sha256, hex::encode(sha2::Sha256::digest(&bytes)));
}

#[test]
fn files_that_are_not_components_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let core_module = dir.path().join("core.wasm");
    // The smallest core module: a valid module, but not a component.
    std::fs::write(&core_module, b"\0asm\x01\0\0\0").expect("write");
    let text = dir.path().join("text.wasm");
    std::fs::write(&text, "not wasm at all").expect("write");
    for file in [&core_module, &text] {
        let result = run(["plugin", "inspect", "--plugin", file.to_str().expect("utf-8 path")], &[])
            .and_then(|r| r.failed())
            .expect("refused");
        assert!(result.stderr.contains("is not a WebAssembly component"), "{}", result.stderr);
    }
    let missing =
        run(["plugin", "inspect", "--plugin", "no-such-plugin"], &[]).and_then(|r| r.failed()).expect("refused");
    assert!(missing.stderr.contains("cannot read plugin no-such-plugin"), "{}", missing.stderr);
}

#[test]
fn compiled_plugins_are_cached_by_digest_and_a_bad_cache_entry_is_recompiled() {
    let cache = tempfile::tempdir().expect("tempdir");
    let env = [("STOWAGE_CACHE_DIR".to_owned(), cache.path().display().to_string())];
    run(["plugin", "inspect", "--plugin", "generator"], &env).and_then(|r| r.ok()).expect("first inspect");
    let bytes = std::fs::read(plugin("generator").expect("plugin")).expect("read plugin");
    use sha2::Digest;
    let digest = hex::encode(sha2::Sha256::digest(&bytes));
    let cached: Vec<_> = std::fs::read_dir(cache.path())
        .expect("cache dir")
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "cwasm"))
        .collect();
    assert_eq!(cached.len(), 1, "{cached:?}");
    let name = cached[0].file_name().and_then(|n| n.to_str()).expect("name").to_owned();
    assert!(name.starts_with(&format!("{digest}-")), "{name}");

    std::fs::write(&cached[0], b"not a precompiled component").expect("corrupt the cache");
    let again = run(["plugin", "inspect", "--plugin", "generator"], &env).and_then(|r| r.ok()).expect("inspect");
    assert!(again.stderr.contains("ignoring unusable precompiled plugin"), "{}", again.stderr);
    assert!(std::fs::read(&cached[0]).expect("cache entry").len() > 1000, "the cache entry was not rewritten");
}

#[test]
fn pins_and_size_limits_are_checked_before_compiling() {
    let wrong = "0".repeat(64);
    let mismatch = run(["plugin", "inspect", "--plugin", "generator", "--plugin-sha256", &wrong], &[])
        .and_then(|r| r.failed())
        .expect("refused");
    assert!(mismatch.stderr.contains(&format!("but {wrong} is pinned")), "{}", mismatch.stderr);
    let dir = tempfile::tempdir().expect("tempdir");
    let huge = dir.path().join("huge.wasm");
    std::fs::File::create(&huge).and_then(|f| f.set_len(65 << 20)).expect("sparse file");
    let oversized = run(["plugin", "inspect", "--plugin", huge.to_str().expect("path")], &[])
        .and_then(|r| r.failed())
        .expect("refused");
    assert!(oversized.stderr.contains("bytes; the limit is 67108864"), "{}", oversized.stderr);
}
