//! Plugins as OCI artifacts, in the layout other WebAssembly tools use: an OCI image
//! manifest whose one `application/wasm` layer is the component (config media type
//! `application/vnd.wasm.config.v0+json`). Pulled with the OCI distribution API over HTTPS;
//! the manifest is checked against the reference's digest, the layer against the
//! manifest's. Registries that ask for credentials get HTTP Basic or the bearer-token flow,
//! with the login from a Docker config JSON (a pull secret) when one is given.

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderName, LOCATION, WWW_AUTHENTICATE};
use hyper::{Method, Response, StatusCode};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::fetch::{Https, read_body, resolve};
use super::{MAX_PLUGIN_BYTES, PluginError};

const MANIFEST_TYPES: &str = "application/vnd.oci.image.manifest.v1+json";
const WASM_LAYER: &str = "application/wasm";
const WASM_CONFIG: &str = "application/vnd.wasm.config.v0+json";

/// `registry/repository[:tag][@sha256:digest]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    pub registry: String,
    pub repository: String,
    pub tag: Option<String>,
    /// `sha256:<hex>` of the manifest.
    pub digest: Option<String>,
}

impl Reference {
    pub fn parse(reference: &str) -> Result<Self, String> {
        let invalid = |why: &str| format!("OCI reference {reference:?}: {why}");
        let (name, digest) = match reference.split_once('@') {
            Some((name, digest)) => (name, Some(digest)),
            None => (reference, None),
        };
        if let Some(digest) = digest {
            let hex = digest.strip_prefix("sha256:").ok_or_else(|| invalid("the digest must be sha256:<hex>"))?;
            if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(invalid("the digest must be sha256 followed by 64 hex digits"));
            }
        }
        let (registry, path) = name.split_once('/').ok_or_else(|| invalid("it names no registry"))?;
        // A tag follows the last ':' of the path (a registry port is before the first '/').
        let (repository, tag) = match path.rsplit_once(':') {
            Some((repository, tag)) => (repository, Some(tag.to_owned())),
            None => (path, None),
        };
        if registry.is_empty() || repository.is_empty() {
            return Err(invalid("registry and repository are required"));
        }
        if tag.is_none() && digest.is_none() {
            return Err(invalid("a tag or a digest is required"));
        }
        Ok(Reference {
            registry: registry.to_owned(),
            repository: repository.to_owned(),
            tag,
            digest: digest.map(str::to_owned),
        })
    }

    fn url(&self, kind: &str, reference: &str) -> String {
        format!("https://{}/v2/{}/{kind}/{reference}", self.registry, self.repository)
    }
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

/// A registry login, from a Docker config JSON (a `kubernetes.io/dockerconfigjson` Secret).
#[derive(Clone)]
pub struct Credentials {
    /// `base64(user:password)`, as HTTP Basic and the token endpoints take it.
    basic: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credentials(<redacted>)")
    }
}

#[derive(Deserialize)]
struct DockerConfig {
    #[serde(default)]
    auths: std::collections::HashMap<String, DockerAuth>,
}

#[derive(Deserialize)]
struct DockerAuth {
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
}

impl Credentials {
    /// The login for `registry` in Docker config JSON `json`, if it has one. Keys may be
    /// a bare `host[:port]` or a URL of it.
    pub fn find(json: &str, registry: &str) -> Result<Option<Self>, String> {
        use base64::Engine;
        let config: DockerConfig = serde_json::from_str(json)
            .map_err(|e| format!("registry credentials are not a Docker config JSON: {e}"))?;
        let host = |key: &str| {
            let key = key.trim_start_matches("https://").trim_start_matches("http://");
            key.split('/').next().unwrap_or_default().to_owned()
        };
        let Some(auth) = config.auths.iter().find(|(key, _)| host(key) == registry).map(|(_, auth)| auth) else {
            return Ok(None);
        };
        let basic = match (&auth.auth, &auth.username, &auth.password) {
            (Some(auth), _, _) => auth.clone(),
            (None, Some(user), Some(password)) => {
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
            }
            _ => return Err(format!("the credentials for {registry} have neither auth nor username and password")),
        };
        Ok(Some(Credentials { basic }))
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    media_type: String,
    digest: String,
    size: u64,
}

#[derive(Debug, Deserialize)]
struct Manifest {
    layers: Vec<Descriptor>,
}

fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// A `key="value"` parameter of a `WWW-Authenticate: Bearer ...` challenge.
fn challenge_parameter(challenge: &str, key: &str) -> Option<String> {
    let start = challenge.find(&format!("{key}=\""))? + key.len() + 2;
    let end = challenge[start..].find('"')? + start;
    Some(challenge[start..end].to_owned())
}

/// A registry session: anonymous, or answering the registry's challenge: HTTP Basic with
/// the credentials, or a bearer token from the realm it names (with the credentials, when
/// there are some).
struct Session {
    https: Https,
    credentials: Option<Credentials>,
    authorization: Option<String>,
}

impl Session {
    fn new(credentials: Option<Credentials>) -> Result<Self, String> {
        Ok(Session { https: Https::new()?, credentials, authorization: None })
    }

    /// GET `url`, following redirects.
    async fn get(&mut self, url: &str, accept: Option<&str>) -> Result<Response<Incoming>, String> {
        let accept: Vec<(HeaderName, String)> = accept.map(|a| (ACCEPT, a.to_owned())).into_iter().collect();
        self.request(Method::GET, url, &accept, Bytes::new()).await
    }

    /// A request, answering an authentication challenge once.
    async fn request(
        &mut self,
        method: Method,
        url: &str,
        headers: &[(HeaderName, String)],
        body: Bytes,
    ) -> Result<Response<Incoming>, String> {
        let refused = || "the registry refused the credentials (401 Unauthorized)".to_owned();
        let response = self.send(method.clone(), url, headers, body.clone()).await?;
        if response.status() != StatusCode::UNAUTHORIZED {
            return Ok(response);
        }
        if self.authorization.is_some() {
            return Err(refused());
        }
        let challenge = response.headers().get(WWW_AUTHENTICATE).and_then(|v| v.to_str().ok()).unwrap_or_default();
        let basic = self.credentials.as_ref().map(|c| format!("Basic {}", c.basic));
        self.authorization = Some(if challenge.starts_with("Bearer ") {
            self.token(challenge, basic).await?
        } else {
            basic.ok_or("the registry requires credentials: give a pull secret (STOWAGE_REGISTRY_AUTH)")?
        });
        let response = self.send(method, url, headers, body).await?;
        if response.status() == StatusCode::UNAUTHORIZED {
            return Err(refused());
        }
        Ok(response)
    }

    async fn send(
        &self,
        method: Method,
        url: &str,
        headers: &[(HeaderName, String)],
        body: Bytes,
    ) -> Result<Response<Incoming>, String> {
        let mut all = headers.to_vec();
        if let Some(authorization) = &self.authorization {
            all.push((AUTHORIZATION, authorization.clone()));
        }
        if method == Method::GET {
            self.https.get(url, &all).await
        } else {
            self.https.send(method, url, &all, body).await
        }
    }

    /// Upload a blob (POST, then a monolithic PUT); returns its digest.
    async fn upload(&mut self, reference: &Reference, blob: Bytes) -> Result<String, String> {
        let digest = sha256_digest(&blob);
        let start = format!("https://{}/v2/{}/blobs/uploads/", reference.registry, reference.repository);
        let started = self.request(Method::POST, &start, &[], Bytes::new()).await?;
        if started.status() != StatusCode::ACCEPTED {
            return Err(format!("starting a blob upload: the registry answered {}", started.status()));
        }
        let location = started.headers().get(LOCATION).and_then(|v| v.to_str().ok()).ok_or("no upload location")?;
        let location = resolve(&start, location)?;
        let separator = if location.contains('?') { '&' } else { '?' };
        let octets = [(CONTENT_TYPE, "application/octet-stream".to_owned())];
        let done = self.request(Method::PUT, &format!("{location}{separator}digest={digest}"), &octets, blob).await?;
        if done.status() != StatusCode::CREATED {
            return Err(format!("uploading blob {digest}: the registry answered {}", done.status()));
        }
        Ok(digest)
    }

    /// A bearer token for `challenge`.
    async fn token(&self, challenge: &str, basic: Option<String>) -> Result<String, String> {
        let realm = challenge_parameter(challenge, "realm").ok_or("the registry's challenge names no realm")?;
        let query: Vec<String> = ["service", "scope"]
            .into_iter()
            .filter_map(|key| {
                let value = challenge_parameter(challenge, key)?;
                Some(format!(
                    "{key}={}",
                    percent_encoding::utf8_percent_encode(&value, percent_encoding::NON_ALPHANUMERIC)
                ))
            })
            .collect();
        let url = if query.is_empty() { realm.clone() } else { format!("{realm}?{}", query.join("&")) };
        let headers: Vec<(HeaderName, String)> = basic.into_iter().map(|basic| (AUTHORIZATION, basic)).collect();
        let answer = self.https.get(&url, &headers).await?;
        let body = read_body(answer, &realm).await.map_err(|e| e.to_string())?;
        let token: serde_json::Value = serde_json::from_slice(&body).map_err(|e| format!("token answer: {e}"))?;
        let token =
            token["token"].as_str().or(token["access_token"].as_str()).ok_or("the token answer has no token")?;
        Ok(format!("Bearer {token}"))
    }
}

/// Pull the component of `reference`; returns its bytes. `pinned` says whether the caller
/// pins the component's sha256 (otherwise the reference must carry a manifest digest).
pub async fn pull(
    reference: &Reference,
    pinned: bool,
    credentials: Option<Credentials>,
) -> Result<Vec<u8>, PluginError> {
    let label = format!("oci:{reference}");
    let fail = |message: String| PluginError::Download { url: label.clone(), message };
    if !pinned && reference.digest.is_none() {
        return Err(PluginError::Unpinned { url: label.clone() });
    }
    let mut session = Session::new(credentials).map_err(fail)?;
    let manifest_ref = reference.digest.clone().or_else(|| reference.tag.clone()).unwrap_or_default();
    let response = session.get(&reference.url("manifests", &manifest_ref), Some(MANIFEST_TYPES)).await.map_err(fail)?;
    let manifest_bytes = read_body(response, &label).await?;
    let actual = sha256_digest(&manifest_bytes);
    if let Some(expected) = &reference.digest
        && !expected.eq_ignore_ascii_case(&actual)
    {
        return Err(fail(format!("the manifest has digest {actual}, but the reference pins {expected}")));
    }
    let manifest: Manifest =
        serde_json::from_slice(&manifest_bytes).map_err(|e| fail(format!("not an OCI image manifest: {e}")))?;
    let mut wasm = manifest.layers.iter().filter(|layer| layer.media_type == WASM_LAYER);
    let layer = match (wasm.next(), wasm.next()) {
        (Some(layer), None) => layer,
        _ => {
            let types: Vec<&str> = manifest.layers.iter().map(|layer| layer.media_type.as_str()).collect();
            return Err(fail(format!("expected exactly one {WASM_LAYER} layer, found layers {types:?}")));
        }
    };
    if layer.size > MAX_PLUGIN_BYTES {
        return Err(PluginError::TooLarge { path: label.clone(), size: layer.size, limit: MAX_PLUGIN_BYTES });
    }
    let response = session.get(&reference.url("blobs", &layer.digest), None).await.map_err(fail)?;
    let component = read_body(response, &label).await?;
    let actual = sha256_digest(&component);
    if !layer.digest.eq_ignore_ascii_case(&actual) {
        return Err(fail(format!("the layer has digest {actual}, but the manifest says {}", layer.digest)));
    }
    Ok(component)
}

/// Push `component` as `reference` (which needs a tag) in the layout [`pull`] reads;
/// returns the manifest's digest, which pins it.
pub async fn push(
    reference: &Reference,
    component: Vec<u8>,
    credentials: Option<Credentials>,
) -> Result<String, String> {
    let tag = reference.tag.as_deref().ok_or("pushing needs a tag: registry/repository:tag")?;
    let mut session = Session::new(credentials)?;
    let config = Bytes::from_static(b"{}");
    let size = component.len();
    let descriptor = |media_type: &str, digest: String, size: usize| serde_json::json!({"mediaType": media_type, "digest": digest, "size": size});
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPES,
        "config": descriptor(WASM_CONFIG, session.upload(reference, config.clone()).await?, config.len()),
        "layers": [descriptor(WASM_LAYER, session.upload(reference, Bytes::from(component)).await?, size)],
    });
    let manifest = Bytes::from(manifest.to_string());
    let digest = sha256_digest(&manifest);
    let headers = [(CONTENT_TYPE, MANIFEST_TYPES.to_owned())];
    let stored = session.request(Method::PUT, &reference.url("manifests", tag), &headers, manifest).await?;
    if stored.status() != StatusCode::CREATED {
        return Err(format!("storing the manifest: the registry answered {}", stored.status()));
    }
    Ok(digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_parse_with_ports_tags_and_digests() {
        let digest = format!("sha256:{}", "ab".repeat(32));
        let parsed = Reference::parse(&format!("localhost:5000/team/pg:1.2@{digest}")).expect("parse");
        assert_eq!(parsed.registry, "localhost:5000");
        assert_eq!(parsed.repository, "team/pg");
        assert_eq!(parsed.tag.as_deref(), Some("1.2"));
        assert_eq!(parsed.digest.as_deref(), Some(digest.as_str()));
        assert_eq!(parsed.to_string(), format!("localhost:5000/team/pg:1.2@{digest}"));
        let by_digest = Reference::parse(&format!("ghcr.io/acme/plugin@{digest}")).expect("parse");
        assert_eq!((by_digest.repository.as_str(), by_digest.tag), ("acme/plugin", None));
        assert!(Reference::parse("ghcr.io/acme/plugin").is_err(), "neither tag nor digest");
        assert!(Reference::parse("plugin:1").is_err(), "no registry");
        assert!(Reference::parse("ghcr.io/acme/plugin@sha256:1234").is_err(), "short digest");
    }

    #[test]
    fn credentials_come_from_docker_config_json_by_registry() {
        let json =
            r#"{"auths": {"https://localhost:5000": {"auth": "dTpw"}, "ghcr.io": {"username": "u", "password": "p"}}}"#;
        assert_eq!(Credentials::find(json, "localhost:5000").expect("valid").map(|c| c.basic).as_deref(), Some("dTpw"));
        assert_eq!(Credentials::find(json, "ghcr.io").expect("valid").map(|c| c.basic).as_deref(), Some("dTpw"));
        assert!(Credentials::find(json, "quay.io").expect("valid").is_none());
        assert!(Credentials::find("not json", "ghcr.io").is_err());
    }

    #[test]
    fn bearer_challenges_give_realm_service_and_scope() {
        let challenge =
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull""#;
        assert_eq!(challenge_parameter(challenge, "realm").as_deref(), Some("https://auth.example/token"));
        assert_eq!(challenge_parameter(challenge, "service").as_deref(), Some("registry.example"));
        assert_eq!(challenge_parameter(challenge, "scope").as_deref(), Some("repository:a/b:pull"));
        assert_eq!(challenge_parameter(challenge, "error"), None);
    }
}
