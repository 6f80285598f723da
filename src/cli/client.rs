//! The HTTP client behind the CLI.

use std::time::Duration;

use reqwest::{Method, RequestBuilder, StatusCode};
use serde::de::DeserializeOwned;

use crate::http::{
    jobs::{JobList, JobView},
    messages::{
        DeleteResponse, DlqMessage, GroupsResponse, ListResponse, WorkflowRun, WorkflowRunsResponse,
    },
};

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Usage(String),
    #[error("cannot reach {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{status}: {message}")]
    Api { status: StatusCode, message: String },
    #[error("unexpected answer from {url}: {detail}")]
    Answer { url: String, detail: String },
    /// Writing a result to stdout failed. A broken pipe (the reader went away, as in
    /// `… | head -1`) is not reported: see [`CliError::is_broken_pipe`].
    #[error("cannot write the output: {0}")]
    Output(#[source] std::io::Error),
    #[error("configuration error: {0}")]
    Config(#[from] crate::config::ConfigError),
    #[error("cannot read {what}: {source}")]
    Input {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// A Kafka client error, its text already masked of secret property values.
    #[error("Kafka: {0}")]
    Kafka(String),
}

impl CliError {
    /// The reader of our stdout has gone away. Every result is printed after its work is
    /// done, so nothing is left undone: the binary exits quietly with success instead of
    /// reporting (or, as `println!` did, panicking about) output nobody wants any more.
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, CliError::Output(e) if e.kind() == std::io::ErrorKind::BrokenPipe)
    }
}

pub struct DlqClient {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl DlqClient {
    pub fn new(base: &str, token: Option<String>) -> Result<DlqClient, CliError> {
        let http = reqwest::Client::builder()
            // An action waits up to 20 s for its command's result on the server.
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|source| CliError::Connect {
                url: base.to_string(),
                source,
            })?;
        Ok(DlqClient {
            http,
            base: base.trim_end_matches('/').to_string(),
            token,
        })
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let r = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    async fn send<T: DeserializeOwned>(&self, r: RequestBuilder) -> Result<T, CliError> {
        let r = r.build().map_err(|source| CliError::Connect {
            url: self.base.clone(),
            source,
        })?;
        let url = r.url().to_string();
        let resp = self
            .http
            .execute(r)
            .await
            .map_err(|source| CliError::Connect {
                url: url.clone(),
                source,
            })?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(|source| CliError::Connect {
            url: url.clone(),
            source,
        })?;
        if !status.is_success() {
            let message = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_string))
                .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
            return Err(CliError::Api { status, message });
        }
        serde_json::from_slice(&body).map_err(|e| CliError::Answer {
            url,
            detail: e.to_string(),
        })
    }

    pub async fn list(&self, query: &[(String, String)]) -> Result<ListResponse, CliError> {
        self.send(self.request(Method::GET, "/v2/workflows/dlq").query(query))
            .await
    }

    pub async fn get(&self, dlq_id: &str) -> Result<DlqMessage, CliError> {
        self.send(self.request(Method::GET, &format!("/v2/workflows/dlq/{dlq_id}")))
            .await
    }

    /// `verb` is `restart` or `resume`.
    pub async fn act(
        &self,
        verb: &str,
        query: &[(String, String)],
        headers: &[(&'static str, String)],
    ) -> Result<WorkflowRunsResponse, CliError> {
        let mut r = self
            .request(Method::POST, &format!("/v2/workflows/dlq/{verb}"))
            .query(query);
        for (k, v) in headers {
            r = r.header(*k, v);
        }
        self.send(r).await
    }

    /// `verb` (`restart` or `resume`) on one entry, with `force=true`: a parked entry too.
    pub async fn act_forced(
        &self,
        verb: &str,
        dlq_id: &str,
        headers: &[(&'static str, String)],
    ) -> Result<WorkflowRun, CliError> {
        let mut r = self
            .request(Method::POST, &format!("/v2/workflows/dlq/{verb}/{dlq_id}"))
            .query(&[("force", "true")]);
        for (k, v) in headers {
            r = r.header(*k, v);
        }
        self.send(r).await
    }

    /// One page of failure groups.
    pub async fn groups(&self, query: &[(String, String)]) -> Result<GroupsResponse, CliError> {
        self.send(
            self.request(Method::GET, "/v2/workflows/dlq/groups")
                .query(query),
        )
        .await
    }

    pub async fn callback(&self, dlq_id: &str) -> Result<WorkflowRun, CliError> {
        self.send(self.request(
            Method::POST,
            &format!("/v2/workflows/dlq/callback/{dlq_id}"),
        ))
        .await
    }

    pub async fn delete(&self, query: &[(String, String)]) -> Result<DeleteResponse, CliError> {
        self.send(
            self.request(Method::DELETE, "/v2/workflows/dlq")
                .query(query),
        )
        .await
    }

    /// Recent jobs, newest first.
    pub async fn jobs(&self, count: u32) -> Result<JobList, CliError> {
        self.send(
            self.request(Method::GET, "/v2/workflows/dlq/jobs")
                .query(&[("count", count.to_string())]),
        )
        .await
    }

    pub async fn job(&self, job_id: &str) -> Result<JobView, CliError> {
        self.send(self.request(Method::GET, &format!("/v2/workflows/dlq/jobs/{job_id}")))
            .await
    }

    /// Cancels a job; answers its view once the cancel is committed (or the wait ran out).
    pub async fn cancel_job(&self, job_id: &str) -> Result<JobView, CliError> {
        self.send(self.request(Method::DELETE, &format!("/v2/workflows/dlq/jobs/{job_id}")))
            .await
    }

    /// The entry count `/v1/status` reports (the size of a bulk run over everything).
    pub async fn status_entries(&self) -> Result<u64, CliError> {
        let v: serde_json::Value = self.send(self.request(Method::GET, "/v1/status")).await?;
        v["entries"].as_u64().ok_or_else(|| CliError::Answer {
            url: format!("{}/v1/status", self.base),
            detail: "no `entries` count".into(),
        })
    }
}
