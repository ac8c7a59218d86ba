//! Each node talks to RabbitMQ as itself: a broker user per node, made through RabbitMQ's
//! management API when the node enrols (and again at each check-in, so a broker that lost its
//! users heals), allowed to read its own job queue and to publish to the heartbeat exchange,
//! nothing else: no declaring, binding or deleting, no other queue, no other exchange. Removing
//! the node deletes the user and closes its connections at once. The server's own broker user
//! never leaves the server.
//!
//! The password is derived from the node's key (which both sides hold), so nothing more is
//! stored and re-granting gives the same credentials.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use serde::Deserialize;
use serde_json::json;
use url::Url;

use crate::broker::Topology;

/// How long a call to the management API may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Grants and revokes nodes' broker users.
#[derive(Clone, Debug)]
pub struct BrokerUsers {
    http: reqwest::Client,
    /// The management API's base, e.g. `http://127.0.0.1:15672/api`.
    api: Url,
    admin: (String, String),
    /// The virtual host the server and its agents use.
    vhost: String,
    /// The broker URL agents are given, with each node's credentials put in.
    agent_url: Url,
    topology: Topology,
    /// Nodes granted since this server started: a check-in grants only the others.
    granted: Arc<Mutex<HashSet<String>>>,
}

/// A node's broker credentials.
pub fn password(node_key: &str) -> String {
    shared::wire::sign(node_key, b"aiedge broker password")
}

impl BrokerUsers {
    /// `management`: the management API's URL with an administrator's credentials (default: the
    /// server's broker URL's host on port 15672, with its credentials). `agent_amqp_url`: the
    /// broker as agents reach it.
    pub fn new(server_amqp_url: &str, management: Option<&str>, agent_amqp_url: &str, topology: Topology) -> anyhow::Result<Self> {
        let amqp = Url::parse(server_amqp_url).context("the broker URL")?;
        let mut api = match management {
            Some(m) => Url::parse(m).context("the broker's management URL")?,
            None => {
                let host = amqp.host_str().unwrap_or("127.0.0.1");
                let mut url = Url::parse(&format!("http://{host}:15672/")).context("the broker's management URL")?;
                let _ = url.set_username(amqp.username());
                let _ = url.set_password(amqp.password());
                url
            }
        };
        let admin = (percent_decode(api.username()), percent_decode(api.password().unwrap_or_default()));
        let _ = api.set_username("");
        let _ = api.set_password(None);
        let api = api.join("api/").context("the broker's management URL")?;
        // The vhost is the AMQP URL's path: "/%2f" (or empty) is "/".
        let path = amqp.path().trim_start_matches('/');
        let vhost = if path.is_empty() { "/".to_string() } else { percent_decode(path) };
        let agent_url = Url::parse(agent_amqp_url).context("the agents' broker URL")?;
        let http = reqwest::Client::builder().timeout(TIMEOUT).build().context("an HTTP client")?;
        Ok(Self { http, api, admin, vhost, agent_url, topology, granted: Arc::default() })
    }

    /// The node's broker user name.
    pub fn user(&self, node_id: &str) -> String {
        format!("{}.node.{node_id}", self.topology.namespace())
    }

    /// The broker URL the node connects with: the agents' URL with the node's own credentials.
    pub fn url_for(&self, node_id: &str, node_key: &str) -> String {
        let mut url = self.agent_url.clone();
        let _ = url.set_username(&self.user(node_id));
        let _ = url.set_password(Some(&password(node_key)));
        url.to_string()
    }

    fn endpoint(&self, parts: &[&str]) -> anyhow::Result<Url> {
        let mut url = self.api.clone();
        url.path_segments_mut().map_err(|()| anyhow::anyhow!("the management URL cannot have a path"))?.pop_if_empty().extend(parts);
        Ok(url)
    }

    async fn send(&self, req: reqwest::RequestBuilder, what: &str) -> anyhow::Result<reqwest::Response> {
        let res = req
            .basic_auth(&self.admin.0, Some(&self.admin.1))
            .send()
            .await
            .with_context(|| format!("{what}: the broker's management API"))?;
        if !res.status().is_success() && res.status() != reqwest::StatusCode::NOT_FOUND {
            let status = res.status();
            let body: String = res.text().await.unwrap_or_default().chars().take(200).collect();
            bail!("{what}: the broker's management API answered {status}: {body}");
        }
        Ok(res)
    }

    /// Creates (or resets) the node's broker user: read its own job queue, publish heartbeats.
    pub async fn grant(&self, node_id: &str, node_key: &str) -> anyhow::Result<()> {
        let user = self.user(node_id);
        let body = json!({ "password": password(node_key), "tags": "" });
        self.send(self.http.put(self.endpoint(&["users", &user])?).json(&body), "creating the node's broker user").await?;
        let exact = |name: String| format!("^{}$", regex_escape(&name));
        let permissions = json!({
            "configure": "^$",
            "write": exact(self.topology.heartbeat_exchange()),
            "read": exact(self.topology.node_queue(node_id)),
        });
        self.send(
            self.http.put(self.endpoint(&["permissions", &self.vhost, &user])?).json(&permissions),
            "setting the node's broker permissions",
        )
        .await?;
        self.granted.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(node_id.to_string());
        Ok(())
    }

    /// Grants the node's broker user unless this server did already (at a check-in: a broker
    /// that lost its users, or a node enrolled before broker users existed, heals here).
    pub async fn ensure(&self, node_id: &str, node_key: &str) -> anyhow::Result<()> {
        if self.granted.lock().unwrap_or_else(std::sync::PoisonError::into_inner).contains(node_id) {
            return Ok(());
        }
        self.grant(node_id, node_key).await
    }

    /// Deletes the node's broker user and closes its open connections.
    pub async fn revoke(&self, node_id: &str) -> anyhow::Result<()> {
        let user = self.user(node_id);
        self.granted.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(node_id);
        self.send(self.http.delete(self.endpoint(&["users", &user])?), "deleting the node's broker user").await?;
        #[derive(Deserialize)]
        struct Connection {
            name: String,
            user: String,
        }
        let mut list = self.endpoint(&["connections"])?;
        list.set_query(Some("columns=name,user"));
        let connections: Vec<Connection> =
            self.send(self.http.get(list), "listing broker connections").await?.json().await.unwrap_or_default();
        for c in connections.into_iter().filter(|c| c.user == user) {
            let req = self.http.delete(self.endpoint(&["connections", &c.name])?).header("X-Reason", "node removed");
            self.send(req, "closing the node's broker connection").await?;
        }
        Ok(())
    }
}

/// A URL part with its %-escapes decoded (a `+` stays a `+`: this is not a form).
fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned()
}

/// `name` as a regular expression that matches only itself.
fn regex_escape(name: &str) -> String {
    name.chars().fold(String::new(), |mut out, c| {
        if !c.is_ascii_alphanumeric() && c != '_' && c != '-' {
            out.push('\\');
        }
        out.push(c);
        out
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn urls_and_names() {
        let users = BrokerUsers::new(
            "amqp://srv:s%40c+ret@broker.lan:5672/%2f",
            None,
            "amqp://ignored:x@broker.example:5672/%2f",
            Topology::new("ai.edge"),
        )
        .unwrap();
        assert_eq!(users.admin, ("srv".to_string(), "s@c+ret".to_string()), "a + in a password is a +");
        assert_eq!(users.vhost, "/");
        assert_eq!(users.api.as_str(), "http://broker.lan:15672/api/");
        assert_eq!(
            users.endpoint(&["permissions", "/", "ai.edge.node.n1"]).unwrap().as_str(),
            "http://broker.lan:15672/api/permissions/%2F/ai.edge.node.n1"
        );
        let url = Url::parse(&users.url_for("n1", "key")).unwrap();
        assert_eq!((url.host_str(), url.username()), (Some("broker.example"), "ai.edge.node.n1"));
        assert_eq!(url.password(), Some(password("key").as_str()));
        assert_eq!(regex_escape("ai.edge.node.1-2"), "ai\\.edge\\.node\\.1-2");
    }
}
