//! Plugins referenced by URL: downloaded over HTTPS only, trusting the system's roots
//! (`SSL_CERT_FILE` and `SSL_CERT_DIR` are honoured), never more than
//! [`MAX_PLUGIN_BYTES`](super::MAX_PLUGIN_BYTES), and only ever used pinned by sha256.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::Uri;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use super::{MAX_PLUGIN_BYTES, PluginError};

/// The longest a download may take.
const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(300);

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

/// Download the plugin at `url`. The caller checks the digest before compiling.
pub async fn fetch(url: &str) -> Result<Vec<u8>, PluginError> {
    let fail = |message: String| PluginError::Download { url: url.to_owned(), message };
    let uri: Uri = url.parse().map_err(|e| fail(format!("not a URL: {e}")))?;
    if uri.scheme_str() != Some("https") {
        return Err(fail("plugins are downloaded over HTTPS only".into()));
    }
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_native_roots()
        .map_err(|e| fail(format!("no trusted root certificates: {e}")))?
        .https_only()
        .enable_http1()
        .build();
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build(connector);
    let download = async {
        let response = client.get(uri).await.map_err(|e| fail(chain(&e)))?;
        if !response.status().is_success() {
            return Err(fail(format!("the server answered {}", response.status())));
        }
        let too_large = |size| PluginError::TooLarge { path: url.to_owned(), size, limit: MAX_PLUGIN_BYTES };
        let announced = response.headers().get(hyper::header::CONTENT_LENGTH);
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
    };
    tokio::time::timeout(DOWNLOAD_TIMEOUT, download)
        .await
        .map_err(|_| fail(format!("not downloaded within {}", humantime::format_duration(DOWNLOAD_TIMEOUT))))?
}
