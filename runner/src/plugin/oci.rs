//! Plugins as OCI artifacts, in the layout other WebAssembly tools use: an OCI image
//! manifest whose one `application/wasm` layer is the component (config media type
//! `application/vnd.wasm.config.v0+json`). Pulled with the OCI distribution API over HTTPS;
//! the manifest is checked against the reference's digest, the layer against the
//! manifest's. Registries that demand a token get the anonymous bearer-token flow.

use hyper::header::{ACCEPT, AUTHORIZATION, HeaderName, WWW_AUTHENTICATE};
use hyper::{Response, StatusCode};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::fetch::{Https, read_body};
use super::{MAX_PLUGIN_BYTES, PluginError};

const MANIFEST_TYPES: &str = "application/vnd.oci.image.manifest.v1+json";
const WASM_LAYER: &str = "application/wasm";

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

/// A registry session: anonymous, or with the token a bearer challenge asked for.
struct Session {
    https: Https,
    token: Option<String>,
}

impl Session {
    async fn get(&mut self, url: &str, accept: Option<&str>) -> Result<Response<hyper::body::Incoming>, String> {
        let headers = |token: &Option<String>| {
            let mut headers: Vec<(HeaderName, String)> = Vec::new();
            if let Some(accept) = accept {
                headers.push((ACCEPT, accept.to_owned()));
            }
            if let Some(token) = token {
                headers.push((AUTHORIZATION, format!("Bearer {token}")));
            }
            headers
        };
        let response = self.https.get(url, &headers(&self.token)).await?;
        if response.status() != StatusCode::UNAUTHORIZED || self.token.is_some() {
            return Ok(response);
        }
        let challenge = response.headers().get(WWW_AUTHENTICATE).and_then(|v| v.to_str().ok()).unwrap_or_default();
        if !challenge.starts_with("Bearer ") {
            return Err("the registry requires credentials; pull secrets are not supported yet".into());
        }
        let realm = challenge_parameter(challenge, "realm").ok_or("the registry's challenge names no realm")?;
        let mut token_url = format!("{realm}?");
        for key in ["service", "scope"] {
            if let Some(value) = challenge_parameter(challenge, key) {
                token_url.push_str(&format!(
                    "{key}={}&",
                    percent_encoding::utf8_percent_encode(&value, percent_encoding::NON_ALPHANUMERIC)
                ));
            }
        }
        let answer = self.https.get(token_url.trim_end_matches(['?', '&']), &[]).await?;
        let body = read_body(answer, &realm).await.map_err(|e| e.to_string())?;
        let token: serde_json::Value = serde_json::from_slice(&body).map_err(|e| format!("token answer: {e}"))?;
        let token =
            token["token"].as_str().or(token["access_token"].as_str()).ok_or("the token answer has no token")?;
        self.token = Some(token.to_owned());
        self.https.get(url, &headers(&self.token)).await
    }
}

/// Pull the component of `reference`; returns its bytes. `pinned` says whether the caller
/// pins the component's sha256 (otherwise the reference must carry a manifest digest).
pub async fn pull(reference: &Reference, pinned: bool) -> Result<Vec<u8>, PluginError> {
    let label = format!("oci:{reference}");
    let fail = |message: String| PluginError::Download { url: label.clone(), message };
    if !pinned && reference.digest.is_none() {
        return Err(PluginError::Unpinned { url: label.clone() });
    }
    let mut session = Session { https: Https::new().map_err(fail)?, token: None };
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
    fn bearer_challenges_give_realm_service_and_scope() {
        let challenge =
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull""#;
        assert_eq!(challenge_parameter(challenge, "realm").as_deref(), Some("https://auth.example/token"));
        assert_eq!(challenge_parameter(challenge, "service").as_deref(), Some("registry.example"));
        assert_eq!(challenge_parameter(challenge, "scope").as_deref(), Some("repository:a/b:pull"));
        assert_eq!(challenge_parameter(challenge, "error"), None);
    }
}
