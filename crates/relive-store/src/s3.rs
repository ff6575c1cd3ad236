//! The S3 backend: a store under `s3://bucket/prefix` of any S3-compatible object store, through
//! the `object_store` crate (retries with backoff, time-outs, multipart uploads, ranged reads).
//!
//! Credentials, region and endpoint come from the standard AWS environment variables
//! (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`,
//! `AWS_ENDPOINT_URL`, ...), else from the profile `AWS_PROFILE` (or `default`) of
//! `~/.aws/credentials` and `~/.aws/config`, as the AWS CLI reads them. A plain `http://`
//! endpoint is allowed for loopback, or with `AWS_ALLOW_HTTP=true`.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey};
use object_store::path::Path as ObjectPath;
use object_store::{ClientOptions, ObjectStore, PutPayload, RetryConfig, WriteMultipart};
use tokio::runtime::Runtime;

use crate::backend::{self, remote, Backend, Object, PerProcess};
use crate::error::{io_at, Result};

/// Objects at least this large go up in parts, several at once.
const MULTIPART_FROM: usize = 16 << 20;
const PART_SIZE: usize = 8 << 20;

/// A store under a prefix of a bucket.
pub struct S3 {
    location: String,
    bucket: String,
    prefix: String,
    settings: Vec<(AmazonS3ConfigKey, String)>,
    client: PerProcess<Client>,
}

struct Client {
    runtime: Runtime,
    store: Arc<AmazonS3>,
}

impl Client {
    /// Runs `future` to its end or to `limit`, whichever comes first. The client's own
    /// time-outs are per attempt and generous (a large part on a slow link); this bounds the
    /// whole operation, retries included, so that a server that accepts connections and never
    /// answers costs a snapshot written in the program's process seconds, not minutes.
    fn within<T>(
        &self,
        limit: Duration,
        future: impl std::future::Future<Output = object_store::Result<T>>,
    ) -> object_store::Result<T> {
        self.runtime.block_on(async {
            tokio::time::timeout(limit, future)
                .await
                .unwrap_or_else(|_| {
                    Err(object_store::Error::Generic {
                        store: "S3",
                        source: format!("timed out: no answer within {} s", limit.as_secs()).into(),
                    })
                })
        })
    }
}

/// How long an operation moving `bytes` may take in all: `backend::QUICK_LIMIT`, plus the
/// time those bytes take at `backend::SLOWEST_RATE`.
fn limit_for(bytes: usize) -> Duration {
    backend::QUICK_LIMIT + Duration::from_secs_f64(bytes as f64 / backend::SLOWEST_RATE)
}

impl std::fmt::Debug for S3 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3")
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

impl S3 {
    /// `rest`: `bucket/prefix` of an `s3://` URL.
    pub fn new(rest: &str) -> Result<S3> {
        let location = format!("s3://{}", rest.trim_end_matches('/'));
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(remote(
                &location,
                "the URL names no bucket (use s3://BUCKET/PREFIX)",
            ));
        }
        let prefix = prefix.trim_matches('/').to_string();
        let settings = settings(&location)?;
        Ok(S3 {
            location,
            bucket: bucket.to_string(),
            prefix,
            settings,
            client: PerProcess::new(),
        })
    }

    fn client(&self) -> Result<Arc<Client>> {
        self.client.get(|| {
            // Client options first: settings such as AWS_ALLOW_HTTP go into them.
            let mut builder = AmazonS3Builder::new()
                .with_bucket_name(&self.bucket)
                .with_client_options(
                    ClientOptions::new()
                        .with_timeout(backend::REQUEST_TIMEOUT)
                        .with_connect_timeout(backend::CONNECT_TIMEOUT),
                )
                .with_retry(RetryConfig {
                    max_retries: 4,
                    retry_timeout: backend::RETRY_TIMEOUT,
                    ..RetryConfig::default()
                });
            for (key, value) in &self.settings {
                builder = builder.with_config(*key, value);
            }
            let store = builder.build().map_err(|e| remote(&self.location, e))?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(4)
                .thread_name("relive-s3")
                .enable_all()
                .build()
                .map_err(|e| {
                    remote(&self.location, format!("cannot start its I/O threads: {e}"))
                })?;
            Ok(Client {
                runtime,
                store: Arc::new(store),
            })
        })
    }

    fn key(&self, name: &str) -> ObjectPath {
        if self.prefix.is_empty() {
            ObjectPath::from(name)
        } else {
            ObjectPath::from(format!("{}/{name}", self.prefix))
        }
    }

    /// Runs one request (with its retries) to the end, or to `limit`.
    fn run<T>(
        &self,
        name: &str,
        limit: Duration,
        request: impl FnOnce(
            Arc<AmazonS3>,
        ) -> futures::future::BoxFuture<'static, object_store::Result<T>>,
    ) -> Result<T> {
        let client = self.client()?;
        let future = request(Arc::clone(&client.store));
        client
            .within(limit, future)
            .map_err(|e| self.error(name, &e))
    }

    fn error(&self, name: &str, e: &object_store::Error) -> crate::Error {
        remote(&self.location, explain(name, e, &self.bucket))
    }

    fn put_bytes(&self, name: &str, bytes: Bytes) -> Result<()> {
        let key = self.key(name);
        let limit = limit_for(bytes.len());
        if bytes.len() < MULTIPART_FROM {
            return self
                .run(name, limit, move |s| {
                    Box::pin(async move { s.put(&key, PutPayload::from(bytes)).await })
                })
                .map(drop);
        }
        self.run(name, limit, move |s| {
            Box::pin(async move {
                let upload = s.put_multipart(&key).await?;
                let mut write = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
                write.put(bytes);
                write.finish().await
            })
        })
        .map(drop)
    }
}

/// An object opened for ranged reads: every read is one ranged GET.
struct S3Object {
    client: Arc<Client>,
    key: ObjectPath,
    location: String,
    bucket: String,
    name: String,
    len: std::sync::OnceLock<u64>,
}

impl Object for S3Object {
    fn size(&self) -> Result<u64> {
        if let Some(len) = self.len.get() {
            return Ok(*len);
        }
        let key = self.key.clone();
        let store = Arc::clone(&self.client.store);
        let meta = self
            .client
            .within(backend::QUICK_LIMIT, async move { store.head(&key).await })
            .map_err(|e| remote(&self.location, explain(&self.name, &e, &self.bucket)))?;
        Ok(*self.len.get_or_init(|| meta.size))
    }

    fn read_at(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        if out.is_empty() {
            return Ok(());
        }
        let key = self.key.clone();
        let store = Arc::clone(&self.client.store);
        let range = backend::range(offset, out.len());
        let bytes = self
            .client
            .within(limit_for(out.len()), async move {
                store.get_range(&key, range).await
            })
            .map_err(|e| match e {
                object_store::Error::NotFound { .. } => io::Error::from(io::ErrorKind::NotFound),
                e => io::Error::other(explain(&self.name, &e, &self.bucket)),
            })?;
        if bytes.len() != out.len() {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        out.copy_from_slice(&bytes);
        Ok(())
    }
}

impl Backend for S3 {
    fn location(&self) -> &str {
        &self.location
    }

    fn local_root(&self) -> Option<&Path> {
        None
    }

    fn staging_dir(&self) -> PathBuf {
        staging_dir()
    }

    fn put_once(&self, name: &str, bytes: &[u8]) -> Result<()> {
        self.put_bytes(name, Bytes::copy_from_slice(bytes))
    }

    fn put_file(&self, name: &str, file: &Path) -> Result<()> {
        let read = fs::read(file).map_err(io_at(file));
        let _ = fs::remove_file(file);
        self.put_bytes(name, Bytes::from(read?))
    }

    fn replace(&self, name: &str, bytes: &[u8]) -> Result<()> {
        // One PUT replaces an object whole: readers see the old or the new one.
        self.put_bytes(name, Bytes::copy_from_slice(bytes))
    }

    fn create_once(&self, name: &str, bytes: &[u8]) -> Result<()> {
        if self.exists(name)? {
            return Ok(());
        }
        self.put_once(name, bytes)
    }

    fn get(&self, name: &str) -> Result<Option<Vec<u8>>> {
        let key = self.key(name);
        // Documents only (manifests, indexes, runs, config): packs are read by range.
        let got = self.run(name, backend::QUICK_LIMIT, move |s| {
            Box::pin(async move {
                match s.get(&key).await {
                    Ok(r) => r.bytes().await.map(Some),
                    // S3 answers 404 for a missing bucket too; only its body tells.
                    Err(object_store::Error::NotFound { source, .. })
                        if !format!("{source:?}").contains("NoSuchBucket") =>
                    {
                        Ok(None)
                    }
                    Err(e) => Err(e),
                }
            })
        })?;
        Ok(got.map(|b| b.to_vec()))
    }

    fn open(&self, name: &str, len: Option<u64>) -> Result<Option<Box<dyn Object>>> {
        let object = S3Object {
            client: self.client()?,
            key: self.key(name),
            location: self.location.clone(),
            bucket: self.bucket.clone(),
            name: name.to_string(),
            len: std::sync::OnceLock::new(),
        };
        match len {
            Some(len) => {
                let _ = object.len.set(len);
            }
            None => match object.size() {
                Ok(_) => {}
                Err(_) if !self.exists(name)? => return Ok(None),
                Err(e) => return Err(e),
            },
        }
        Ok(Some(Box::new(object)))
    }

    fn exists(&self, name: &str) -> Result<bool> {
        let key = self.key(name);
        self.run(name, backend::QUICK_LIMIT, move |s| {
            Box::pin(async move {
                match s.head(&key).await {
                    Ok(_) => Ok(true),
                    Err(object_store::Error::NotFound { .. }) => Ok(false),
                    Err(e) => Err(e),
                }
            })
        })
    }

    fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>> {
        // object_store lists by path segments: list the directory part, filter the rest.
        let (dir, _) = prefix.rsplit_once('/').unwrap_or(("", prefix));
        let key = if dir.is_empty() && self.prefix.is_empty() {
            None
        } else if dir.is_empty() {
            Some(ObjectPath::from(self.prefix.as_str()))
        } else {
            Some(self.key(dir))
        };
        // Pages of a thousand names each: a few per kind of object in a large store.
        let metas = self.run(prefix, 3 * backend::QUICK_LIMIT, move |s| {
            Box::pin(async move { s.list(key.as_ref()).try_collect::<Vec<_>>().await })
        })?;
        let strip = if self.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.prefix)
        };
        let mut found: Vec<(String, u64)> = metas
            .into_iter()
            .filter_map(|m| {
                let name = m
                    .location
                    .as_ref()
                    .strip_prefix(strip.as_str())?
                    .to_string();
                Some((name, m.size))
            })
            .filter(|(name, _)| name.starts_with(prefix))
            .collect();
        found.sort();
        Ok(found)
    }

    fn delete(&self, name: &str) -> Result<()> {
        let key = self.key(name);
        self.run(name, backend::QUICK_LIMIT, move |s| {
            Box::pin(async move {
                match s.delete(&key).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                    Err(e) => Err(e),
                }
            })
        })
    }
}

/// Where packs for remote stores are staged before they go up: a private directory of this
/// user's, cleaned of files whose writer is gone as `tmp/` is.
fn staging_dir() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("relive").join("staging")
}

/// The settings of the client: the environment first, then the AWS profile files.
fn settings(location: &str) -> Result<Vec<(AmazonS3ConfigKey, String)>> {
    let env: HashMap<String, String> = std::env::vars()
        .filter(|(k, _)| k.starts_with("AWS_"))
        .map(|(k, v)| (k.to_ascii_lowercase(), v))
        .collect();
    let profile = env
        .get("aws_profile")
        .cloned()
        .unwrap_or_else(|| "default".into());
    let mut from_files = profile_settings(&profile);
    // The environment wins over the files, key by key (the AWS CLI's order).
    from_files.extend(env.clone());
    let mut settings = Vec::new();
    for (key, value) in &from_files {
        let key = match key.as_str() {
            "aws_access_key_id" => AmazonS3ConfigKey::AccessKeyId,
            "aws_secret_access_key" => AmazonS3ConfigKey::SecretAccessKey,
            "aws_session_token" => AmazonS3ConfigKey::Token,
            "aws_region" | "region" => AmazonS3ConfigKey::Region,
            "aws_default_region" if !from_files.contains_key("aws_region") => {
                AmazonS3ConfigKey::Region
            }
            "aws_endpoint_url" | "aws_endpoint_url_s3" | "endpoint_url" => {
                AmazonS3ConfigKey::Endpoint
            }
            "aws_allow_http" => AmazonS3ConfigKey::Client(object_store::ClientConfigKey::AllowHttp),
            _ => continue,
        };
        settings.push((key, value.clone()));
    }
    if !settings
        .iter()
        .any(|(k, _)| *k == AmazonS3ConfigKey::Region)
    {
        settings.push((AmazonS3ConfigKey::Region, "us-east-1".into()));
    }
    let endpoint = settings
        .iter()
        .find(|(k, _)| *k == AmazonS3ConfigKey::Endpoint)
        .map(|(_, v)| v.clone());
    if let Some(endpoint) = endpoint {
        if let Some(host) = endpoint.strip_prefix("http://") {
            let host = host.split('/').next().unwrap_or("");
            let opted_in = settings.iter().any(|(k, v)| {
                *k == AmazonS3ConfigKey::Client(object_store::ClientConfigKey::AllowHttp)
                    && v == "true"
            });
            let loopback = ["127.", "localhost", "[::1]"]
                .iter()
                .any(|h| host.starts_with(h));
            if loopback {
                settings.push((
                    AmazonS3ConfigKey::Client(object_store::ClientConfigKey::AllowHttp),
                    "true".into(),
                ));
            } else if !opted_in {
                return Err(remote(
                    location,
                    format!("the endpoint {endpoint} is plain http and not on this machine: use https, or set AWS_ALLOW_HTTP=true to send the store's data unencrypted"),
                ));
            }
        }
    }
    Ok(settings)
}

/// `key = value` pairs of `profile` in `~/.aws/credentials` and `~/.aws/config` (there the
/// section is `[profile NAME]`, except `[default]`), lower-cased keys prefixed `aws_` where
/// the files leave it out (`region`, `endpoint_url`).
fn profile_settings(profile: &str) -> HashMap<String, String> {
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    let credentials = std::env::var_os("AWS_SHARED_CREDENTIALS_FILE")
        .map(PathBuf::from)
        .unwrap_or_else(|| home.join(".aws").join("credentials"));
    let config = std::env::var_os("AWS_CONFIG_FILE")
        .map(PathBuf::from)
        .unwrap_or_else(|| home.join(".aws").join("config"));
    let mut found = HashMap::new();
    let config_section = if profile == "default" {
        "default".to_string()
    } else {
        format!("profile {profile}")
    };
    for (file, section) in [(config, config_section), (credentials, profile.to_string())] {
        let Ok(text) = fs::read_to_string(&file) else {
            continue;
        };
        for (key, value) in ini_section(&text, &section) {
            let key = match key.as_str() {
                "region" => "aws_region".to_string(),
                "endpoint_url" => "aws_endpoint_url".to_string(),
                k => k.to_string(),
            };
            found.insert(key, value);
        }
    }
    found
}

/// The `key = value` lines of `[section]` in an INI text.
fn ini_section(text: &str, section: &str) -> Vec<(String, String)> {
    let mut inside = false;
    let mut pairs = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.starts_with(';') || line.is_empty() {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            inside = name.trim() == section;
            continue;
        }
        if inside {
            if let Some((k, v)) = line.split_once('=') {
                pairs.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
    }
    pairs
}

/// What went wrong, in the user's words: refused credentials, a missing bucket, an unreachable
/// server, or the service's own message.
fn explain(name: &str, e: &object_store::Error, bucket: &str) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    let has = |needle: &str| text.contains(needle);
    let debug = format!("{e:?}");
    if debug.contains("NoSuchBucket") || has("bucket does not exist") {
        format!("there is no bucket {bucket:?} (create it, or check the URL)")
    } else if has("InvalidAccessKeyId")
        || has("SignatureDoesNotMatch")
        || has("AccessDenied")
        || has("403 Forbidden")
        || matches!(
            e,
            object_store::Error::PermissionDenied { .. }
                | object_store::Error::Unauthenticated { .. }
        )
    {
        "the server refused the credentials (check AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY or AWS_PROFILE)".into()
    } else if has("error sending request")
        || has("Connection refused")
        || has("tcp connect")
        || has("dns error")
        || has("timed out")
    {
        let endpoint =
            std::env::var("AWS_ENDPOINT_URL").unwrap_or_else(|_| "the S3 endpoint".into());
        let cause = [
            ("Connection refused", "connection refused"),
            ("timed out", "timed out"),
            ("dns error", "the name does not resolve"),
        ]
        .iter()
        .find(|(needle, _)| has(needle))
        .map_or("cannot connect", |(_, said)| said);
        format!("the server is unreachable at {endpoint} ({cause}, reading or writing {name})")
    } else if let object_store::Error::NotFound { .. } = e {
        format!("{name} is not there")
    } else {
        format!("{name}: {}", first_line(&text))
    }
}

fn first_line(text: &str) -> &str {
    let line = text.lines().next().unwrap_or("");
    if line.len() > 300 {
        let mut end = 300;
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        &line[..end]
    } else {
        line
    }
}
