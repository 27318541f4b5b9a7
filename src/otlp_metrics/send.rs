//! One OTLP metrics request delivered: protobuf over HTTP POST (`http/protobuf`, with
//! reqwest) or the gRPC `MetricsService/Export` call (tonic, from opentelemetry-proto).
//!
//! Owns the transports, the headers on them and what counts as delivered (a 2xx answer, or
//! gRPC OK). Does not own when requests go (`mod`), what they hold (`build`), nor the error
//! type a transport that cannot be built gives (`error`). An error names the endpoint as
//! [`shown`] redacts it and never a header's value.

use std::time::Duration;

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use prost::Message;

use super::error::Error;
use crate::config::Protocol;

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
        endpoint: &str,
        headers: &[(String, String)],
        timeout: Duration,
    ) -> Result<Transport, Error> {
        let bad_header = |name: &str| Error::InvalidHeader(name.to_string());
        match protocol {
            Protocol::HttpProtobuf => {
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
                Ok(Transport::Grpc {
                    client: MetricsServiceClient::new(channel),
                    endpoint: endpoint.to_string(),
                    headers: map,
                })
            }
        }
    }

    /// Deliver one request; `Ok` with the data points the receiver said it rejected (a
    /// partial success), `Err` naming what went wrong.
    pub async fn send(&self, request: ExportMetricsServiceRequest) -> Result<i64, String> {
        match self {
            Transport::Http {
                client,
                url,
                headers,
            } => {
                let answer = client
                    .post(url)
                    .headers(headers.clone())
                    .header("content-type", "application/x-protobuf")
                    .body(request.encode_to_vec())
                    .send()
                    .await
                    .map_err(|e| {
                        format!("POST {}: {}", shown(url), error_chain(&e.without_url()))
                    })?;
                let status = answer.status();
                let body = answer.bytes().await.unwrap_or_default();
                if !status.is_success() {
                    let text = String::from_utf8_lossy(&body[..body.len().min(ERROR_BODY)]);
                    return Err(format!(
                        "POST {}: HTTP {}: {}",
                        shown(url),
                        status.as_u16(),
                        text.trim()
                    ));
                }
                Ok(ExportMetricsServiceResponse::decode(body.as_ref())
                    .ok()
                    .and_then(|r| r.partial_success)
                    .map_or(0, |p| p.rejected_data_points))
            }
            Transport::Grpc {
                client,
                endpoint,
                headers,
            } => {
                let mut req = tonic::Request::new(request);
                *req.metadata_mut() = headers.clone();
                let answer = client.clone().export(req).await.map_err(|s| {
                    format!(
                        "gRPC {}: {:?}: {}",
                        shown(endpoint),
                        s.code(),
                        s.message().chars().take(ERROR_BODY).collect::<String>()
                    )
                })?;
                Ok(answer
                    .into_inner()
                    .partial_success
                    .map_or(0, |p| p.rejected_data_points))
            }
        }
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
        for protocol in [Protocol::HttpProtobuf, Protocol::Grpc] {
            let err = Transport::new(protocol, "http://c:4318", &headers, Duration::from_secs(1))
                .err()
                .unwrap();
            assert_eq!(
                err.to_string(),
                "OTLP metrics header \"x-token\" is not valid"
            );
        }
    }
}
