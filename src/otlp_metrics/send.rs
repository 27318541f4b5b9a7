//! One OTLP metrics request delivered: protobuf or JSON over HTTP POST (`http/protobuf`,
//! `http/json`, with reqwest) or the gRPC `MetricsService/Export` call (tonic, from
//! opentelemetry-proto), gzip-compressed when asked.
//!
//! Owns the transports, the encoding and compression of a request, the headers on them, what
//! counts as delivered (a 2xx answer, or gRPC OK) and which failures are transient (the OTLP
//! specification's list, with the `Retry-After` given). Does not own when requests go, nor
//! when they go again (`mod`, `retry`), what they hold (`build`), nor the error type a
//! transport that cannot be built gives (`error`). An error names the endpoint as [`shown`]
//! redacts it and never a header's value.

use std::io::Write as _;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use prost::Message;

use super::error::Error;
use super::retry::{Retry, parse_retry_after};
use crate::config::{Compression, Protocol};

/// At most this much of a refusal's body goes into the error.
const ERROR_BODY: usize = 256;

/// An endpoint as it may be logged: without user and password.
pub fn shown(endpoint: &str) -> String {
    match url::Url::parse(endpoint) {
        Ok(mut u) if !u.username().is_empty() || u.password().is_some() => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.to_string()
        }
        Ok(_) => endpoint.to_string(),
        Err(_) => "<an endpoint that is not a URL>".to_string(),
    }
}

/// Where and how requests go.
pub enum Transport {
    Http {
        client: reqwest::Client,
        url: String,
        headers: reqwest::header::HeaderMap,
        /// OTLP/JSON rather than protobuf.
        json: bool,
        gzip: bool,
    },
    Grpc {
        client: MetricsServiceClient<tonic::transport::Channel>,
        endpoint: String,
        headers: tonic::metadata::MetadataMap,
    },
}

impl Transport {
    /// A transport to `endpoint` (for HTTP the full URL, `.../v1/metrics`), each request
    /// bounded by `timeout`. Nothing connects yet.
    pub fn new(
        protocol: Protocol,
        compression: Compression,
        endpoint: &str,
        headers: &[(String, String)],
        timeout: Duration,
    ) -> Result<Transport, Error> {
        let bad_header = |name: &str| Error::InvalidHeader(name.to_string());
        let gzip = compression == Compression::Gzip;
        match protocol {
            Protocol::HttpProtobuf | Protocol::HttpJson => {
                let mut map = reqwest::header::HeaderMap::new();
                for (name, value) in headers {
                    let n = reqwest::header::HeaderName::from_bytes(name.as_bytes())
                        .map_err(|_| bad_header(name))?;
                    let mut v = reqwest::header::HeaderValue::from_str(value)
                        .map_err(|_| bad_header(name))?;
                    v.set_sensitive(true);
                    map.insert(n, v);
                }
                let client = reqwest::Client::builder()
                    .timeout(timeout)
                    .build()
                    .map_err(Error::HttpClient)?;
                url::Url::parse(endpoint).map_err(|error| Error::HttpEndpoint {
                    endpoint: shown(endpoint),
                    error,
                })?;
                Ok(Transport::Http {
                    client,
                    url: endpoint.to_string(),
                    headers: map,
                    json: protocol == Protocol::HttpJson,
                    gzip,
                })
            }
            Protocol::Grpc => {
                let mut map = tonic::metadata::MetadataMap::new();
                for (name, value) in headers {
                    let n = tonic::metadata::AsciiMetadataKey::from_bytes(
                        name.to_ascii_lowercase().as_bytes(),
                    )
                    .map_err(|_| bad_header(name))?;
                    let v = tonic::metadata::AsciiMetadataValue::try_from(value.as_str())
                        .map_err(|_| bad_header(name))?;
                    map.insert(n, v);
                }
                let channel = tonic::transport::Endpoint::from_shared(endpoint.to_string())
                    .map_err(|error| Error::GrpcEndpoint {
                        endpoint: shown(endpoint),
                        error,
                    })?
                    .timeout(timeout)
                    .connect_timeout(timeout)
                    .connect_lazy();
                let mut client = MetricsServiceClient::new(channel);
                if gzip {
                    client = client.send_compressed(tonic::codec::CompressionEncoding::Gzip);
                }
                Ok(Transport::Grpc {
                    client,
                    endpoint: endpoint.to_string(),
                    headers: map,
                })
            }
        }
    }

    /// One request as it goes on the wire, encoded (and compressed) once for all its
    /// attempts.
    pub fn encode(&self, request: ExportMetricsServiceRequest) -> Result<Payload, String> {
        match self {
            Transport::Http { json, gzip, .. } => {
                let body = if *json {
                    serde_json::to_vec(&request)
                        .map_err(|e| format!("encoding the metrics as OTLP/JSON: {e}"))?
                } else {
                    request.encode_to_vec()
                };
                let body = if *gzip {
                    let mut gz = flate2::write::GzEncoder::new(
                        Vec::with_capacity(body.len() / 4),
                        flate2::Compression::fast(),
                    );
                    gz.write_all(&body)
                        .and_then(|()| gz.finish())
                        .map_err(|e| format!("compressing the metrics: {e}"))?
                } else {
                    body
                };
                Ok(Payload::Body(Bytes::from(body)))
            }
            Transport::Grpc { .. } => Ok(Payload::Grpc(request)),
        }
    }

    /// Deliver one request; `Ok` with the data points the receiver said it rejected (a
    /// partial success), else what went wrong and whether it is worth sending again.
    pub async fn send(&self, payload: &Payload) -> Result<i64, Failure> {
        match (self, payload) {
            (
                Transport::Http {
                    client,
                    url,
                    headers,
                    json,
                    gzip,
                },
                Payload::Body(body),
            ) => {
                let mut post = client
                    .post(url)
                    .headers(headers.clone())
                    .header(
                        "content-type",
                        if *json {
                            "application/json"
                        } else {
                            "application/x-protobuf"
                        },
                    )
                    .body(body.clone());
                if *gzip {
                    post = post.header("content-encoding", "gzip");
                }
                let answer = post.send().await.map_err(|e| Failure {
                    message: format!("POST {}: {}", shown(url), error_chain(&e.without_url())),
                    // No answer (no connection, a timeout): transient.
                    retry: Retry::After(None),
                })?;
                let status = answer.status();
                let retry_after = answer
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| parse_retry_after(v, SystemTime::now()));
                let body = answer.bytes().await.unwrap_or_default();
                if !status.is_success() {
                    let text = String::from_utf8_lossy(&body[..body.len().min(ERROR_BODY)]);
                    return Err(Failure {
                        message: format!(
                            "POST {}: HTTP {}: {}",
                            shown(url),
                            status.as_u16(),
                            text.trim()
                        ),
                        retry: if matches!(status.as_u16(), 429 | 502 | 503 | 504) {
                            Retry::After(retry_after)
                        } else {
                            Retry::No
                        },
                    });
                }
                let response = if *json {
                    serde_json::from_slice::<ExportMetricsServiceResponse>(&body).ok()
                } else {
                    ExportMetricsServiceResponse::decode(body.as_ref()).ok()
                };
                Ok(response
                    .and_then(|r| r.partial_success)
                    .map_or(0, |p| p.rejected_data_points))
            }
            (
                Transport::Grpc {
                    client,
                    endpoint,
                    headers,
                },
                Payload::Grpc(request),
            ) => {
                let mut req = tonic::Request::new(request.clone());
                *req.metadata_mut() = headers.clone();
                let answer = client.clone().export(req).await.map_err(|s| Failure {
                    message: format!(
                        "gRPC {}: {:?}: {}",
                        shown(endpoint),
                        s.code(),
                        s.message().chars().take(ERROR_BODY).collect::<String>()
                    ),
                    retry: grpc_retry(s.code()),
                })?;
                Ok(answer
                    .into_inner()
                    .partial_success
                    .map_or(0, |p| p.rejected_data_points))
            }
            _ => Err(Failure {
                message: "a request encoded for another transport".into(),
                retry: Retry::No,
            }),
        }
    }
}

/// A request encoded for its transport.
pub enum Payload {
    /// An HTTP body (protobuf or JSON, gzip-compressed or not).
    Body(Bytes),
    Grpc(ExportMetricsServiceRequest),
}

/// Why a request was not delivered.
#[derive(Debug)]
pub struct Failure {
    pub message: String,
    pub retry: Retry,
}

/// The gRPC codes the OTLP specification calls transient (`RESOURCE_EXHAUSTED` only with
/// retry information, which is not read here: not retried).
fn grpc_retry(code: tonic::Code) -> Retry {
    use tonic::Code;
    match code {
        Code::Cancelled
        | Code::DeadlineExceeded
        | Code::Aborted
        | Code::OutOfRange
        | Code::Unavailable
        | Code::DataLoss => Retry::After(None),
        _ => Retry::No,
    }
}

/// An error and its sources, `: `-joined (reqwest's own message hides the cause).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_shown_without_credentials() {
        assert_eq!(
            shown("https://user:pw@collector:4318/v1/metrics"),
            "https://collector:4318/v1/metrics"
        );
        assert_eq!(
            shown("http://c:4318/v1/metrics"),
            "http://c:4318/v1/metrics"
        );
        assert_eq!(shown("not a url"), "<an endpoint that is not a URL>");
    }

    #[test]
    fn a_header_that_cannot_be_sent_is_named_not_shown() {
        let headers = [("x-token".to_string(), "bad\nvalue".to_string())];
        for protocol in [Protocol::HttpProtobuf, Protocol::HttpJson, Protocol::Grpc] {
            let err = Transport::new(
                protocol,
                Compression::None,
                "http://c:4318",
                &headers,
                Duration::from_secs(1),
            )
            .err()
            .unwrap();
            assert_eq!(
                err.to_string(),
                "OTLP metrics header \"x-token\" is not valid"
            );
        }
    }

    // See: #32
    #[test]
    fn transient_failures_are_the_specifications() {
        assert_eq!(grpc_retry(tonic::Code::Unavailable), Retry::After(None));
        assert_eq!(
            grpc_retry(tonic::Code::DeadlineExceeded),
            Retry::After(None)
        );
        assert_eq!(grpc_retry(tonic::Code::InvalidArgument), Retry::No);
        assert_eq!(grpc_retry(tonic::Code::Unauthenticated), Retry::No);
        assert_eq!(grpc_retry(tonic::Code::ResourceExhausted), Retry::No);
    }
}
