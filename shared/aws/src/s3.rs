//! `ResultStore` on S3: `results/<key>.json`, written once with `If-None-Match: *`.

use async_trait::async_trait;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::Client;
use vacal_core::ports::{check_result_key, ResultStore, StoreError, StoreResult};

use crate::sdk_error;

/// Results as S3 objects. Cheap to clone.
#[derive(Clone, Debug)]
pub struct S3Results {
    client: Client,
    bucket: String,
}

impl S3Results {
    pub fn new(client: Client, bucket: &str) -> Self {
        S3Results {
            client,
            bucket: bucket.to_string(),
        }
    }

    /// The object key of a result; only lowercase hex keys, as the local adapter accepts.
    pub fn object_key(key: &str) -> StoreResult<String> {
        check_result_key(key)?;
        Ok(format!("results/{key}.json"))
    }
}

#[async_trait]
impl ResultStore for S3Results {
    async fn put_if_absent(&self, key: &str, bytes: &[u8]) -> StoreResult<()> {
        let object = S3Results::object_key(key)?;
        let res = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(object)
            .content_type("application/json")
            .if_none_match("*")
            .body(ByteStream::from(bytes.to_vec()))
            .send()
            .await;
        match res {
            Ok(_) => Ok(()),
            Err(e) => {
                let status = e.raw_response().map(|r| r.status().as_u16());
                match status {
                    // 412: the object exists, which is what "put if absent" wanted. 409: a
                    // concurrent conditional put of the same key is in flight; one of them
                    // wins whole, and the result is the same for the same key.
                    Some(412) | Some(409) => Ok(()),
                    _ => Err(sdk_error("S3 PutObject", &e)),
                }
            }
        }
    }

    async fn get(&self, key: &str) -> StoreResult<Option<Vec<u8>>> {
        let object = S3Results::object_key(key)?;
        let res = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(object)
            .send()
            .await;
        let out = match res {
            Ok(out) => out,
            Err(e) if e.as_service_error().is_some_and(|se| se.is_no_such_key()) => {
                return Ok(None)
            }
            Err(e) => return Err(sdk_error("S3 GetObject", &e)),
        };
        let bytes = out
            .body
            .collect()
            .await
            .map_err(|e| StoreError::Unavailable(format!("S3 GetObject body: {e}")))?;
        Ok(Some(bytes.into_bytes().to_vec()))
    }

    async fn delete(&self, key: &str) -> StoreResult<()> {
        let object = S3Results::object_key(key)?;
        // DeleteObject succeeds for a missing key too.
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(object)
            .send()
            .await
            .map_err(|e| sdk_error("S3 DeleteObject", &e))?;
        Ok(())
    }
}
