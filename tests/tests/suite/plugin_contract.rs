//! The plugin contract: the built generator component exports the `stowage:plugin`
//! world of `wit/`, files that are not plugins are refused with a precise error, and
//! plugins referenced by URL are downloaded only over verified HTTPS, pinned and bounded.

use sha2::{Digest, Sha256};
use stowage_tests::registry::{RedirectingRegistry, Registry};
use stowage_tests::stowage::{plugin, run};
use stowage_tests::tls::HttpsServer;

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

#[test]
fn plugins_by_url_come_over_verified_https_pinned_and_size_limited() {
    let root = tempfile::tempdir().expect("tempdir");
    let component = std::fs::read(plugin("generator").expect("generator")).expect("read generator");
    std::fs::write(root.path().join("generator.wasm"), &component).expect("publish");
    std::fs::File::create(root.path().join("huge.wasm")).and_then(|f| f.set_len(65 << 20)).expect("sparse file");
    let server = HttpsServer::serve(root.path()).expect("https server");
    let trusted = [("SSL_CERT_FILE".to_owned(), server.ca_file().display().to_string())];
    let sha256 = hex::encode(Sha256::digest(&component));
    let inspect = |url: &str, pin: Option<&str>, env: &[(String, String)]| {
        let mut args = vec!["plugin", "inspect", "--plugin", url];
        if let Some(pin) = pin {
            args.extend(["--plugin-sha256", pin]);
        }
        run(args, env).expect("run stowage")
    };

    let url = server.url("generator.wasm");
    let inspected = inspect(&url, Some(&sha256), &trusted).ok().expect("a pinned download");
    assert!(inspected.stdout.contains("generator") && inspected.stdout.contains(&sha256), "{}", inspected.stdout);

    let failures = [
        (inspect(&url, None, &trusted), "so it must be pinned".to_owned()),
        (inspect(&url, Some(&"0".repeat(64)), &trusted), format!("has sha256 {sha256}, but")),
        (inspect(&url, Some(&sha256), &[]), "invalid peer certificate: UnknownIssuer".to_owned()),
        (inspect(&server.url("huge.wasm"), Some(&sha256), &trusted), "bytes; the limit is 67108864".to_owned()),
        (inspect(&server.url("missing.wasm"), Some(&sha256), &trusted), "the server answered 404 Not Found".to_owned()),
        (
            inspect(&format!("http://localhost:{}/generator.wasm", server.port), Some(&sha256), &trusted),
            "plugins are downloaded over HTTPS only".to_owned(),
        ),
    ];
    for (outcome, expected) in failures {
        let failed = outcome.failed().expect("refused");
        assert!(failed.stderr.contains(&expected), "expected {expected:?} in:\n{}", failed.stderr);
    }
}

/// `haystack` with every `from` replaced by `to` (of the same length); returns how many.
fn replace_all(haystack: &mut [u8], from: &[u8], to: &[u8]) -> usize {
    assert_eq!(from.len(), to.len(), "a same-length replacement keeps the component's layout");
    let mut count = 0;
    let mut at = 0;
    while let Some(found) = haystack[at..].windows(from.len()).position(|window| window == from) {
        haystack[at + found..at + found + to.len()].copy_from_slice(to);
        at += found + to.len();
        count += 1;
    }
    count
}

#[test]
fn a_plugin_built_for_another_wit_version_is_refused() {
    // The generator, re-labelled as exporting a future major version of the contract: a
    // valid component whose `stowage:plugin/plugin` export this runner must not trust.
    let version = wit_package_version();
    let future = format!("{}{}", if version.starts_with('9') { '8' } else { '9' }, &version[1..]);
    let mut component = std::fs::read(plugin("generator").expect("generator")).expect("read generator");
    let export = |version: &str| format!("stowage:plugin/plugin@{version}");
    let replaced = replace_all(&mut component, export(&version).as_bytes(), export(&future).as_bytes());
    assert!(replaced > 0, "the generator names its export {}", export(&version));
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("future.wasm");
    std::fs::write(&path, &component).expect("write fixture");

    let refused = run(["plugin", "inspect", "--plugin", path.to_str().expect("path")], &[])
        .and_then(|r| r.failed())
        .expect("refused");
    let expected = format!("is built for stowage:plugin@{future}; this runner supports stowage:plugin@{version}");
    assert!(refused.stderr.contains(&expected), "{}", refused.stderr);
}

#[test]
fn plugins_from_an_oci_registry_are_pulled_verified_and_pinned() {
    let registry = Registry::start().expect("registry");
    let generator = plugin("generator").expect("generator");
    let digest = registry.push("stowage/generator", "1.0", &generator).expect("push");
    let component_sha256 = hex::encode(Sha256::digest(std::fs::read(&generator).expect("read generator")));
    let trusted = registry.env();
    let inspect = |reference: &str, pin: Option<&str>| {
        let plugin = format!("oci://{reference}");
        let mut args = vec!["plugin", "inspect", "--plugin", &plugin];
        if let Some(pin) = pin {
            args.extend(["--plugin-sha256", pin]);
        }
        run(args, &trusted).expect("run stowage")
    };
    let repository = format!("{}/stowage/generator", registry.host());

    for (reference, pin) in [
        (format!("{repository}:1.0@{digest}"), None),
        (format!("{repository}@{digest}"), None),
        (format!("{repository}:1.0"), Some(component_sha256.as_str())),
    ] {
        let inspected = inspect(&reference, pin).ok().unwrap_or_else(|e| panic!("{reference}: {e}"));
        assert!(inspected.stdout.contains(&component_sha256), "{}", inspected.stdout);
    }

    let other_digest = format!("sha256:{}", "0".repeat(64));
    let failures = [
        (inspect(&format!("{repository}:1.0"), None), "so it must be pinned"),
        (inspect(&format!("{repository}:1.0@{other_digest}"), None), "the server answered 404"),
        (inspect(&format!("{repository}:2.0"), Some(&component_sha256)), "the server answered 404"),
        (inspect(&format!("{repository}:1.0"), Some(&"0".repeat(64))), "is pinned"),
    ];
    for (outcome, expected) in failures {
        let failed = outcome.failed().expect("refused");
        assert!(failed.stderr.contains(expected), "expected {expected:?} in:\n{}", failed.stderr);
    }
}

#[test]
fn private_registries_take_the_credentials_of_a_docker_config() {
    let registry = Registry::start_private("robot", "s3cret").expect("registry");
    let generator = plugin("generator").expect("generator");
    let digest = registry.push("private/generator", "1.0", &generator).expect("push");
    let plugin = format!("oci://{}/private/generator:1.0@{digest}", registry.host());
    let inspect = |env: &[(String, String)]| run(["plugin", "inspect", "--plugin", &plugin], env).expect("run stowage");
    let inspected = inspect(&registry.env()).ok().expect("pull with credentials");
    assert!(inspected.stdout.contains("generator"), "{}", inspected.stdout);
    let trusted: Vec<_> = registry.env().into_iter().filter(|(name, _)| name == "SSL_CERT_FILE").collect();
    let anonymous = inspect(&trusted).failed().expect("pull without credentials");
    assert!(anonymous.stderr.contains("the registry requires credentials"), "{}", anonymous.stderr);
    let wrong_login = serde_json::json!({"auths": {registry.host(): {"username": "robot", "password": "wrong"}}});
    let wrong = [trusted.clone(), vec![("STOWAGE_REGISTRY_AUTH".to_owned(), wrong_login.to_string())]].concat();
    let wrong = inspect(&wrong).failed().expect("pull with wrong credentials");
    assert!(wrong.stderr.contains("the registry refused the credentials"), "{}", wrong.stderr);
    // Pushing needs the credentials too.
    let component = generator.to_str().expect("path");
    let destination = format!("oci://{}/private/other:1.0", registry.host());
    let refused = run(["plugin", "push", component, &destination], &trusted).and_then(|r| r.failed()).expect("push");
    assert!(refused.stderr.contains("the registry requires credentials"), "{}", refused.stderr);
}

#[test]
fn registry_credentials_never_follow_a_redirect_to_another_origin() {
    let front = RedirectingRegistry::start("robot", "s3cret").expect("registry behind a redirecting front door");
    let generator = plugin("generator").expect("generator");
    let digest = front.registry.push("private/generator", "1.0", &generator).expect("push");
    let reference = format!("oci://{}/private/generator:1.0@{digest}", front.host());
    let inspected = run(["plugin", "inspect", "--plugin", &reference], &front.env()).expect("run stowage");
    let inspected = inspected.ok().expect("the pull follows the redirect");
    assert!(inspected.stdout.contains("generator"), "{}", inspected.stdout);
    let redirected = front.redirected_requests();
    assert!(!redirected.is_empty(), "the blob download was not redirected");
    for request in &redirected {
        assert!(request.ends_with("authorization=False"), "credentials reached the other origin: {request}");
    }
}
