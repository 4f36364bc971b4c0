//! Amazon S3 and S3-compatible services (SeaweedFS, IBM COS, Ceph, ...) via aws-sdk-s3.

use std::time::Duration;

use async_trait::async_trait;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_s3::Client;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::{RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::error::SdkError;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart as S3Part};
use aws_smithy_http_client::Builder;
use aws_smithy_http_client::tls::Provider;
use aws_smithy_http_client::tls::rustls_provider::CryptoMode;
use bytes::Bytes;
use chrono::{DateTime, Utc};

use super::{
    CompletedPart, MultipartUpload, ObjectInfo, ObjectReader, ObjectStore, Precondition, StoreError, Versioned,
};

/// An access key pair given explicitly instead of through the AWS credential chain.
#[derive(Clone)]
pub struct StaticCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
}

impl std::fmt::Debug for StaticCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaticCredentials").field("access_key_id", &self.access_key_id).finish_non_exhaustive()
    }
}

/// How to reach an S3-compatible service. Credentials come from the standard AWS
/// chain (environment, profile, web identity, ...) unless given here.
#[derive(Debug, Clone, Default)]
pub struct S3Options {
    /// Credentials to use instead of the AWS chain.
    pub credentials: Option<StaticCredentials>,
    /// Endpoint URL of an S3-compatible service; `None` for AWS.
    pub endpoint: Option<String>,
    /// Region; defaults to the AWS chain's, then `us-east-1`.
    pub region: Option<String>,
    /// Address buckets as `endpoint/bucket` instead of `bucket.endpoint`.
    pub path_style: bool,
}

/// One bucket of an S3-compatible service.
#[derive(Debug, Clone)]
pub struct S3Store {
    client: Client,
    bucket: String,
}

impl S3Store {
    pub async fn connect(bucket: &str, options: &S3Options) -> Self {
        // The SDK's default client would bring aws-lc; ring is the workspace's one provider.
        // Everything the loader resolves (region from IMDS, credentials from STS) uses it:
        // a region chain built apart from the loader would have no HTTP client.
        let https = Builder::new().tls_provider(Provider::Rustls(CryptoMode::Ring)).build_https();
        let mut loader = aws_config::defaults(BehaviorVersion::latest()).http_client(https);
        if let Some(region) = &options.region {
            loader = loader.region(Region::new(region.clone()));
        }
        if let Some(endpoint) = &options.endpoint {
            loader = loader.endpoint_url(endpoint);
        }
        if let Some(credentials) = &options.credentials {
            loader = loader.credentials_provider(aws_sdk_s3::config::Credentials::new(
                &credentials.access_key_id,
                &credentials.secret_access_key,
                None,
                None,
                "stowage",
            ));
        }
        let shared = loader.load().await;
        let region = shared.region().cloned().unwrap_or_else(|| Region::new("us-east-1"));
        let config = aws_sdk_s3::config::Builder::from(&shared)
            .region(region)
            .force_path_style(options.path_style)
            // Stowage checks every artifact with its own sha256; the SDK's optional
            // checksums are not supported by every S3-compatible service.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .retry_config(RetryConfig::standard().with_max_attempts(5))
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(10))
                    .operation_attempt_timeout(Duration::from_secs(300))
                    .build(),
            )
            .build();
        S3Store { client: Client::from_conf(config), bucket: bucket.to_owned() }
    }
}

#[async_trait]
impl ObjectStore for S3Store {
    async fn put(&self, key: &str, body: Bytes) -> Result<(), StoreError> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| StoreError::request("put", key, describe(e)))?;
        Ok(())
    }

    async fn start_multipart(&self, key: &str) -> Result<Box<dyn MultipartUpload>, StoreError> {
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| StoreError::request("start upload of", key, describe(e)))?;
        let upload_id = created
            .upload_id()
            .ok_or_else(|| StoreError::request("start upload of", key, "the server returned no upload id"))?;
        Ok(Box::new(S3Upload { store: self.clone(), key: key.to_owned(), upload_id: upload_id.to_owned() }))
    }

    async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        let object = self.get_object(key).await?;
        let data = object.body.collect().await.map_err(|e| StoreError::request("read", key, e))?;
        Ok(data.into_bytes())
    }

    async fn reader(&self, key: &str) -> Result<ObjectReader, StoreError> {
        let object = self.get_object(key).await?;
        Ok(Box::pin(object.body.into_async_read()))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        let mut pages = self.client.list_objects_v2().bucket(&self.bucket).prefix(prefix).into_paginator().send();
        let mut objects = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| StoreError::request("list", prefix, describe(e)))?;
            for object in page.contents() {
                let Some(key) = object.key() else { continue };
                objects.push(ObjectInfo {
                    key: key.to_owned(),
                    size: object.size().unwrap_or(0).max(0) as u64,
                    last_modified: object.last_modified().and_then(to_chrono),
                });
            }
        }
        objects.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(objects)
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| StoreError::request("delete", key, describe(e)))?;
        Ok(())
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectInfo>, StoreError> {
        match self.client.head_object().bucket(&self.bucket).key(key).send().await {
            Ok(head) => Ok(Some(ObjectInfo {
                key: key.to_owned(),
                size: head.content_length().unwrap_or(0).max(0) as u64,
                last_modified: head.last_modified().and_then(to_chrono),
            })),
            Err(error) if status(&error) == Some(404) => Ok(None),
            Err(error) => Err(StoreError::request("stat", key, describe(error))),
        }
    }

    async fn get_versioned(&self, key: &str) -> Result<Option<Versioned>, StoreError> {
        let object = match self.get_object(key).await {
            Ok(object) => object,
            Err(StoreError::NotFound { .. }) => return Ok(None),
            Err(error) => return Err(error),
        };
        let etag = object
            .e_tag()
            .map(str::to_owned)
            .ok_or_else(|| StoreError::request("read", key, "the server returned no ETag"))?;
        let body = object.body.collect().await.map_err(|e| StoreError::request("read", key, e))?.into_bytes();
        Ok(Some(Versioned { body, etag }))
    }

    async fn put_if(&self, key: &str, body: Bytes, precondition: Precondition) -> Result<Option<String>, StoreError> {
        let request = self.client.put_object().bucket(&self.bucket).key(key).body(ByteStream::from(body));
        let request = match precondition {
            Precondition::Absent => request.if_none_match("*"),
            Precondition::Matches(etag) => request.if_match(etag),
        };
        match request.send().await {
            Ok(put) => Ok(Some(put.e_tag().map(str::to_owned).ok_or_else(|| {
                StoreError::request("put", key, "the server returned no ETag, so it cannot do conditional writes")
            })?)),
            Err(error) if precondition_failed(&error) => Ok(None),
            Err(error) => Err(StoreError::request("put", key, conditional_hint(describe(error)))),
        }
    }

    async fn delete_if(&self, key: &str, etag: &str) -> Result<bool, StoreError> {
        match self.client.delete_object().bucket(&self.bucket).key(key).if_match(etag).send().await {
            Ok(_) => Ok(true),
            Err(error) if precondition_failed(&error) || status(&error) == Some(404) => Ok(false),
            Err(error) => Err(StoreError::request("delete", key, conditional_hint(describe(error)))),
        }
    }

    async fn abort_stale_uploads(&self, prefix: &str, older_than: DateTime<Utc>) -> Result<usize, StoreError> {
        let listed = self
            .client
            .list_multipart_uploads()
            .bucket(&self.bucket)
            .prefix(prefix)
            .send()
            .await
            .map_err(|e| StoreError::request("list uploads under", prefix, describe(e)))?;
        let mut aborted = 0;
        for upload in listed.uploads() {
            let (Some(key), Some(upload_id)) = (upload.key(), upload.upload_id()) else {
                continue;
            };
            let started = upload.initiated().and_then(to_chrono);
            if started.is_some_and(|started| started >= older_than) {
                continue;
            }
            S3Upload { store: self.clone(), key: key.to_owned(), upload_id: upload_id.to_owned() }.abort().await?;
            aborted += 1;
        }
        Ok(aborted)
    }
}

impl S3Store {
    async fn get_object(&self, key: &str) -> Result<aws_sdk_s3::operation::get_object::GetObjectOutput, StoreError> {
        self.client.get_object().bucket(&self.bucket).key(key).send().await.map_err(|e| {
            if e.as_service_error().is_some_and(|e| e.is_no_such_key()) {
                StoreError::NotFound { key: key.to_owned() }
            } else {
                StoreError::request("read", key, describe(e))
            }
        })
    }
}

#[derive(Debug)]
struct S3Upload {
    store: S3Store,
    key: String,
    upload_id: String,
}

#[async_trait]
impl MultipartUpload for S3Upload {
    async fn put_part(&self, number: u32, body: Bytes) -> Result<CompletedPart, StoreError> {
        let part = self
            .store
            .client
            .upload_part()
            .bucket(&self.store.bucket)
            .key(&self.key)
            .upload_id(&self.upload_id)
            .part_number(number as i32)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| StoreError::request("upload part of", &self.key, describe(e)))?;
        Ok(CompletedPart { number, etag: part.e_tag().map(str::to_owned) })
    }

    async fn complete(&self, parts: Vec<CompletedPart>) -> Result<(), StoreError> {
        let parts = parts
            .into_iter()
            .map(|part| S3Part::builder().part_number(part.number as i32).set_e_tag(part.etag).build())
            .collect();
        self.store
            .client
            .complete_multipart_upload()
            .bucket(&self.store.bucket)
            .key(&self.key)
            .upload_id(&self.upload_id)
            .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
            .send()
            .await
            .map_err(|e| StoreError::request("complete upload of", &self.key, describe(e)))?;
        Ok(())
    }

    async fn abort(&self) -> Result<(), StoreError> {
        self.store
            .client
            .abort_multipart_upload()
            .bucket(&self.store.bucket)
            .key(&self.key)
            .upload_id(&self.upload_id)
            .send()
            .await
            .map_err(|e| StoreError::request("abort upload of", &self.key, describe(e)))?;
        Ok(())
    }
}

/// The HTTP status of a failed request, if the server answered.
fn status<E>(error: &SdkError<E, HttpResponse>) -> Option<u16> {
    error.raw_response().map(|response| response.status().as_u16())
}

/// 412, or 409 when another conditional write to the key was in progress (AWS).
fn precondition_failed<E>(error: &SdkError<E, HttpResponse>) -> bool {
    matches!(status(error), Some(412 | 409))
}

/// Stores that do not know conditional headers answer 501 or reject them.
fn conditional_hint(message: String) -> String {
    if message.contains("NotImplemented") || message.contains("501") {
        format!("{message} (the store does not support conditional writes, which Stowage needs for its lock)")
    } else {
        message
    }
}

fn to_chrono(time: &aws_sdk_s3::primitives::DateTime) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(time.secs(), time.subsec_nanos())
}

/// The SDK's `Display` for errors is only "service error"; the full chain names the cause.
fn describe(error: impl std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}
