//! A small client of the HTTP API, for the CLI, the demo and the tests.

use crate::limits::CLIENT_REQUEST_TIMEOUT;
use anyhow::Context;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// An answer other than 2xx, kept typed so that the CLI can map it to its
/// exit code.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {status_line}: {body}")]
pub struct HttpError {
    pub what: String,
    pub status: u16,
    /// `404 Not Found`, as the message shows it.
    status_line: String,
    pub body: String,
}

#[derive(Clone)]
pub struct Client {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl Client {
    /// `base` like `http://127.0.0.1:7070`.
    pub fn new(base: impl Into<String>, token: Option<String>) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(CLIENT_REQUEST_TIMEOUT)
            .build()
            .context("HTTP client")?;
        Ok(Self {
            base: base.into().trim_end_matches('/').to_string(),
            token,
            http,
        })
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let builder = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(token) => builder.bearer_auth(token),
            None => builder,
        }
    }

    async fn finish<T: DeserializeOwned>(
        what: &str,
        response: reqwest::Response,
    ) -> anyhow::Result<T> {
        let status = response.status();
        let text = response.text().await.context("read the response")?;
        if !status.is_success() {
            return Err(HttpError {
                what: what.to_string(),
                status: status.as_u16(),
                status_line: status.to_string(),
                body: text,
            }
            .into());
        }
        serde_json::from_str(&text).with_context(|| format!("{what}: unexpected answer {text}"))
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let response = self
            .request(reqwest::Method::GET, path)
            .send()
            .await
            .with_context(|| format!("GET {path}"))?;
        Self::finish(&format!("GET {path}"), response).await
    }

    /// `None` on 404.
    pub async fn get_opt<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<Option<T>> {
        let response = self
            .request(reqwest::Method::GET, path)
            .send()
            .await
            .with_context(|| format!("GET {path}"))?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        Self::finish(&format!("GET {path}"), response)
            .await
            .map(Some)
    }

    pub async fn send<B: Serialize, T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: &B,
    ) -> anyhow::Result<T> {
        let what = format!("{method} {path}");
        let response = self
            .request(method, path)
            .json(body)
            .send()
            .await
            .with_context(|| what.clone())?;
        Self::finish(&what, response).await
    }

    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let response = self
            .request(reqwest::Method::DELETE, path)
            .send()
            .await
            .with_context(|| format!("DELETE {path}"))?;
        Self::finish(&format!("DELETE {path}"), response).await
    }

    /// The raw answer (status and body), for tests of error handling.
    pub async fn raw(
        &self,
        method: reqwest::Method,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> anyhow::Result<(u16, String)> {
        let response = self
            .request(method, path)
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(body)
            .send()
            .await?;
        let status = response.status().as_u16();
        Ok((status, response.text().await?))
    }
}
