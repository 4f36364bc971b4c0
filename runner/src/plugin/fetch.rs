//! Plugins from the network: an `https://` URL, or an OCI artifact in a registry
//! ([`super::oci`]). HTTPS only, trusting the system's roots (`SSL_CERT_FILE` and
//! `SSL_CERT_DIR` are honoured), never more than [`MAX_PLUGIN_BYTES`], and only ever used
//! pinned by a digest.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, CONTENT_LENGTH, HeaderName, LOCATION};
use hyper::{Method, Request, Response, StatusCode, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::{MAX_PLUGIN_BYTES, PluginError};

/// The longest a download may take.
pub const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(300);

/// Redirects followed (registries send blobs to their storage).
const MAX_REDIRECTS: usize = 5;

/// An error and its causes on one line (hyper's top-level errors say little).
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// An HTTPS-only client.
pub struct Https {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl Https {
    pub fn new() -> Result<Self, String> {
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()
            .map_err(|e| format!("no trusted root certificates: {e}"))?
            .https_only()
            .enable_http1()
            .build();
        Ok(Https { client: Client::builder(TokioExecutor::new()).build(connector) })
    }

    /// GET `url` with `headers`, following redirects (to HTTPS only). Credentials
    /// (`Authorization`) go to the first origin only: registries redirect blob downloads to
    /// CDNs and object stores, which must never see them.
    pub async fn get(&self, url: &str, headers: &[(HeaderName, String)]) -> Result<Response<Incoming>, String> {
        let first = origin(url);
        let mut url = url.to_owned();
        let mut headers = headers.to_vec();
        for _ in 0..=MAX_REDIRECTS {
            let response = self.send(Method::GET, &url, &headers, Bytes::new()).await?;
            if !response.status().is_redirection() {
                return Ok(response);
            }
            let location = response.headers().get(LOCATION).and_then(|v| v.to_str().ok()).unwrap_or_default();
            url = resolve(&url, location)?;
            if origin(&url) != first {
                headers.retain(|(name, _)| *name != AUTHORIZATION);
            }
        }
        Err(format!("more than {MAX_REDIRECTS} redirects"))
    }

    /// One request, no redirects.
    pub async fn send(
        &self,
        method: Method,
        url: &str,
        headers: &[(HeaderName, String)],
        body: Bytes,
    ) -> Result<Response<Incoming>, String> {
        let uri: Uri = url.parse().map_err(|e| format!("{url} is not a URL: {e}"))?;
        if uri.scheme_str() != Some("https") {
            return Err(format!("{url}: plugins are downloaded over HTTPS only"));
        }
        let mut request = Request::builder().method(method).uri(uri);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let request = request.body(Full::new(body)).map_err(|e| e.to_string())?;
        self.client.request(request).await.map_err(|e| chain(&e))
    }
}

/// The scheme and authority of a URL, lowercased; `None` if it has none.
fn origin(url: &str) -> Option<(String, String)> {
    let uri: Uri = url.parse().ok()?;
    Some((uri.scheme_str()?.to_ascii_lowercase(), uri.authority()?.as_str().to_ascii_lowercase()))
}

/// `location` (absolute, or a path on the same server) relative to `base`.
pub fn resolve(base: &str, location: &str) -> Result<String, String> {
    let next: Uri = location.parse().map_err(|e| format!("location {location:?}: {e}"))?;
    if next.scheme().is_some() {
        return Ok(location.to_owned());
    }
    let base: Uri = base.parse().map_err(|e| format!("{base} is not a URL: {e}"))?;
    let authority = base.authority().map_or("", |a| a.as_str());
    Ok(format!("{}://{authority}{location}", base.scheme_str().unwrap_or("https")))
}

/// The body of a successful response, at most [`MAX_PLUGIN_BYTES`]; `label` names the
/// plugin in errors.
pub async fn read_body(response: Response<Incoming>, label: &str) -> Result<Vec<u8>, PluginError> {
    let fail = |message: String| PluginError::Download { url: label.to_owned(), message };
    if response.status() != StatusCode::OK {
        return Err(fail(format!("the server answered {}", response.status())));
    }
    let too_large = |size| PluginError::TooLarge { path: label.to_owned(), size, limit: MAX_PLUGIN_BYTES };
    let announced = response.headers().get(CONTENT_LENGTH);
    if let Some(size) = announced.and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok())
        && size > MAX_PLUGIN_BYTES
    {
        return Err(too_large(size));
    }
    let mut body = response.into_body();
    let mut bytes = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| fail(chain(&e)))?;
        if let Ok(data) = frame.into_data() {
            let size = (bytes.len() + data.len()) as u64;
            if size > MAX_PLUGIN_BYTES {
                return Err(too_large(size));
            }
            bytes.extend_from_slice(&data);
        }
    }
    Ok(bytes)
}

/// Download the plugin at `url`. The caller checks the digest before compiling.
pub async fn fetch(url: &str) -> Result<Vec<u8>, PluginError> {
    let fail = |message: String| PluginError::Download { url: url.to_owned(), message };
    let download = async {
        let https = Https::new().map_err(fail)?;
        let response = https.get(url, &[]).await.map_err(fail)?;
        read_body(response, url).await
    };
    tokio::time::timeout(DOWNLOAD_TIMEOUT, download)
        .await
        .map_err(|_| fail(format!("not downloaded within {}", humantime::format_duration(DOWNLOAD_TIMEOUT))))?
}

#[cfg(test)]
mod tests {
    use super::{origin, resolve};

    #[test]
    fn redirects_to_another_origin_are_recognised() {
        let registry = origin("https://registry.example:5000/v2/a/blobs/sha256:00");
        assert_eq!(origin("https://REGISTRY.example:5000/other"), registry);
        assert_ne!(origin("https://registry.example/v2"), registry, "another port is another origin");
        assert_ne!(origin("https://cdn.example/blob"), registry);
        let relative = resolve("https://registry.example:5000/v2/x", "/blob?sig=1").expect("resolve");
        assert_eq!(origin(&relative), registry);
    }
}
