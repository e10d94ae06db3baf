//! The one HTTP client every upstream call goes through.
//!
//! hyper-util's pooled client over rustls (webpki roots, TLS verification always on) rather than
//! reqwest: the gateway needs nothing reqwest adds (cookies, redirects, proxies, decompression),
//! and two of those are hazards here — redirects must never be followed (test-matrix U17) and
//! proxy environment variables must not reroute provider traffic. hyper-util follows no redirects.
//!
//! The upstream host always comes from operator config ([`BaseUrl`]); adapters only supply a
//! path and query that [`BaseUrl::join`] appends.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, Uri, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::adapter::UpstreamRequest;

/// A validated upstream base URL from operator config: `http(s)://host[:port][/path]`, with no
/// user info, query or fragment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseUrl {
    scheme: http::uri::Scheme,
    authority: http::uri::Authority,
    /// Without a trailing slash, e.g. `/v1` or empty.
    prefix: String,
}

impl BaseUrl {
    pub fn parse(s: &str) -> Result<BaseUrl, String> {
        let uri: Uri = s
            .parse()
            .map_err(|e| format!("`{s}` is not a valid URL: {e}"))?;
        let scheme = uri
            .scheme()
            .cloned()
            .ok_or_else(|| format!("`{s}` has no scheme (expected http:// or https://)"))?;
        if scheme != http::uri::Scheme::HTTP && scheme != http::uri::Scheme::HTTPS {
            return Err(format!("`{s}`: only http and https are supported"));
        }
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| format!("`{s}` has no host"))?;
        if authority.as_str().contains('@') {
            return Err(format!(
                "`{s}` contains user info; put credentials in api_key, not in the URL"
            ));
        }
        if authority.host().is_empty() {
            return Err(format!("`{s}` has no host"));
        }
        if uri.query().is_some() || s.contains('#') {
            return Err(format!("`{s}` must not contain a query or fragment"));
        }
        let prefix = uri.path().trim_end_matches('/').to_owned();
        Ok(BaseUrl {
            scheme,
            authority,
            prefix,
        })
    }

    pub fn join(&self, path_and_query: &str) -> Result<Uri, http::Error> {
        debug_assert!(path_and_query.starts_with('/'));
        let pq = format!("{}{}", self.prefix, path_and_query);
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(pq)
            .build()
    }

    pub fn host(&self) -> &str {
        self.authority.host()
    }

    pub fn is_https(&self) -> bool {
        self.scheme == http::uri::Scheme::HTTPS
    }
}

impl std::fmt::Display for BaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}{}", self.scheme, self.authority, self.prefix)
    }
}

#[derive(Debug, Clone)]
pub struct ClientOptions {
    pub connect_timeout: Duration,
    pub pool_idle_timeout: Duration,
    pub pool_max_idle_per_host: usize,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            connect_timeout: Duration::from_secs(10),
            pool_idle_timeout: Duration::from_secs(90),
            pool_max_idle_per_host: 512,
        }
    }
}

/// Why an upstream call produced no response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The connection could not be made: the request never reached the provider.
    #[error("could not connect to the upstream")]
    Connect,
    /// No response headers within the time-to-first-byte budget. The provider may have started
    /// (and billed) the request: ambiguous.
    #[error("the upstream did not answer in time")]
    Timeout,
    /// The connection failed after the request was (maybe) written: ambiguous.
    #[error("the upstream connection failed: {0}")]
    Io(String),
    /// The request could not be built (bad header value or URL): a gateway bug or bad config.
    #[error("invalid upstream request: {0}")]
    Build(String),
}

impl SendError {
    /// True when the provider may have received (and billed) the request.
    pub fn ambiguous(&self) -> bool {
        matches!(self, SendError::Timeout | SendError::Io(_))
    }
}

/// Why reading an upstream body failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("the upstream response exceeded {0} bytes")]
    TooLarge(usize),
    #[error("the upstream stalled")]
    Idle,
    #[error("the upstream connection broke: {0}")]
    Io(String),
}

#[derive(Clone)]
pub struct HttpClient {
    inner: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    user_agent: HeaderValue,
}

impl HttpClient {
    pub fn new(opts: &ClientOptions) -> HttpClient {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(opts.connect_timeout));
        http.set_keepalive(Some(Duration::from_secs(60)));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(std::sync::Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .map(|b| {
                b.https_or_http()
                    .enable_http1()
                    .enable_http2()
                    .wrap_connector(http.clone())
            });
        let https = match https {
            Ok(c) => c,
            // The ring provider always supports the default protocol versions; fall back to the
            // process default provider rather than panicking if that ever changes.
            Err(_) => hyper_rustls::HttpsConnectorBuilder::new()
                .with_webpki_roots()
                .https_or_http()
                .enable_http1()
                .enable_http2()
                .wrap_connector(http),
        };
        let inner = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(opts.pool_idle_timeout)
            .pool_max_idle_per_host(opts.pool_max_idle_per_host)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(https);
        HttpClient {
            inner,
            user_agent: HeaderValue::from_static(concat!("kairos/", env!("CARGO_PKG_VERSION"))),
        }
    }

    /// Send one request and wait for the response headers, at most `ttfb` long.
    ///
    /// Headers are built from scratch: the adapter's (content type, provider auth), then
    /// `extra` (operator-configured static headers and the gateway request id). Nothing from
    /// the caller's request is copied here.
    pub async fn send(
        &self,
        base: &BaseUrl,
        req: UpstreamRequest,
        extra: &HeaderMap,
        ttfb: Duration,
    ) -> Result<Response<Incoming>, SendError> {
        let uri = base
            .join(&req.path_and_query)
            .map_err(|e| SendError::Build(e.to_string()))?;
        let mut builder = Request::builder().method(Method::POST).uri(uri);
        if let Some(h) = builder.headers_mut() {
            h.reserve(req.headers.len() + extra.len() + 1);
            h.extend(req.headers);
            for (k, v) in extra {
                h.insert(k.clone(), v.clone());
            }
            h.insert(header::USER_AGENT, self.user_agent.clone());
        }
        let request = builder
            .body(Full::new(req.body))
            .map_err(|e| SendError::Build(e.to_string()))?;
        match tokio::time::timeout(ttfb, self.inner.request(request)).await {
            Err(_) => Err(SendError::Timeout),
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) if e.is_connect() => Err(SendError::Connect),
            Ok(Err(e)) => Err(SendError::Io(error_chain(&e))),
        }
    }
}

/// Read a whole (non-streamed) body, failing past `max` bytes or when no data arrives for `idle`.
pub async fn read_body(mut body: Incoming, max: usize, idle: Duration) -> Result<Bytes, BodyError> {
    let mut first: Option<Bytes> = None;
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let frame = match tokio::time::timeout(idle, body.frame()).await {
            Err(_) => return Err(BodyError::Idle),
            Ok(None) => break,
            Ok(Some(Err(e))) => return Err(BodyError::Io(error_chain(&e))),
            Ok(Some(Ok(f))) => f,
        };
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        if first.is_none() && buf.is_empty() {
            if data.len() > max {
                return Err(BodyError::TooLarge(max));
            }
            first = Some(data);
            continue;
        }
        if let Some(f) = first.take() {
            buf.extend_from_slice(&f);
        }
        if buf.len() + data.len() > max {
            return Err(BodyError::TooLarge(max));
        }
        buf.extend_from_slice(&data);
    }
    Ok(match first {
        Some(f) => f,
        None => Bytes::from(buf),
    })
}

/// The error and its sources in one line, without URLs (hyper errors carry none, but be safe).
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    crate::adapter::sanitize_message(&s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_url_validation() {
        let b = BaseUrl::parse("https://api.openai.com/v1/").unwrap();
        assert_eq!(
            b.join("/chat/completions").unwrap().to_string(),
            "https://api.openai.com/v1/chat/completions"
        );
        assert!(BaseUrl::parse("ftp://x").is_err());
        assert!(BaseUrl::parse("https://user:pw@host/v1").is_err());
        assert!(BaseUrl::parse("https://host/v1?key=abc").is_err());
        assert!(BaseUrl::parse("https://host/v1#frag").is_err());
        assert!(BaseUrl::parse("api.openai.com").is_err());
        let b = BaseUrl::parse("http://127.0.0.1:9999").unwrap();
        assert_eq!(
            b.join("/v1/messages").unwrap().to_string(),
            "http://127.0.0.1:9999/v1/messages"
        );
    }

    #[tokio::test]
    async fn connection_refused_is_a_connect_error() {
        // Bind then drop to get a port nobody listens on.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        let c = HttpClient::new(&ClientOptions::default());
        let base = BaseUrl::parse(&format!("http://127.0.0.1:{port}/v1")).unwrap();
        let req = UpstreamRequest {
            path_and_query: "/chat/completions".into(),
            headers: HeaderMap::new(),
            body: Bytes::from_static(b"{}"),
        };
        let err = c
            .send(&base, req, &HeaderMap::new(), Duration::from_secs(5))
            .await
            .unwrap_err();
        assert_eq!(err, SendError::Connect);
        assert!(!err.ambiguous());
    }
}
